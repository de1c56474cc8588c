"""`python -m tests.slow_serve serve`: srserve with the slow test model registered (see tests.slow_model)."""

from srserve.service.cli import main
from tests.slow_model import register

register()
raise SystemExit(main())
