"""`python -m srserve.service` is `srserve`."""

from srserve.service.cli import main

raise SystemExit(main())
