"""The ID of the request the running code serves: set by the access middleware, read by the log filter
and the worker. A contextvar, so decode/encode threads that copy the context see it too."""

from __future__ import annotations

from contextvars import ContextVar

#: "-" outside any request.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
