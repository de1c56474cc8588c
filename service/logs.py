"""Log set-up for ``srserve serve``: text or JSON lines, each with the request ID it was written for."""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from srserve.service.request_context import REQUEST_ID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: The access line's fields stand on their own in JSON; its text message would repeat them.
JSON_FIELDS = ["asctime", "levelname", "name", "request_id", "message"]


class RequestIDFilter(logging.Filter):
    """Stamps every record with the ID of the request being handled ("-" outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    """One handler on the root logger for srserve and uvicorn alike (uvicorn's own access log is off)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIDFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger", "asctime": "time"})
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
