"""`python -m service` is `srserve`."""

from service.cli import main

raise SystemExit(main())
