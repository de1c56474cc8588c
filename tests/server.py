"""The real server for integration tests (see :mod:`service.launcher`)."""

from service.launcher import Server, metric_value, running_server

__all__ = ["Server", "metric_value", "running_server"]
