"""The one ASGI middleware every request passes through, outermost.

It gives the request its ID (the client's ``X-Request-ID`` if sane, else a new
one) and puts it on the response and in every log line written while the
request runs; counts every response (``srserve_requests_total``, the latency
histogram and, for errors, ``srserve_rejections_total``) with bounded labels;
writes the request's one access line; and answers anything unhandled with a
JSON 500 that still carries the ID, logging its traceback once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from srserve.service.errors import error_body
from srserve.service.metrics import Metrics
from srserve.service.request_context import REQUEST_ID

#: Probes hit every few seconds: their lines are logged at debug, not info.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
#: Error bodies are small JSON; a larger error body is not read for its code.
_ERROR_BODY_LIMIT = 64 * 1024
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PRIORITIES = frozenset({"normal", "low"})

access_log = logging.getLogger("srserve.access")
log = logging.getLogger("srserve.errors")


class AccessMiddleware:
    """Args:
    app: the application inside.
    metrics: where every response is counted.
    served: the served model names (the only ``model`` label values besides "unknown" and "").
    paths: the app's path templates (its OpenAPI paths), to name the route of a request refused before routing.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        served: Callable[[], Collection[str]],
        paths: Callable[[], Iterable[str]],
    ) -> None:
        self.app, self.metrics, self.served, self.paths = app, metrics, served, paths
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        response: dict[str, Any] = {
            "started": False,
            "status": 500,
            "timing": None,
            "bytes": 0,
            "error": b"",
            "read_error": False,
        }

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                response["started"] = True
                response["status"] = message["status"]
                response["timing"] = headers.get("server-timing")
                response["read_error"] = message["status"] >= 400 and headers.get("content-type", "").startswith(
                    "application/json"
                )
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                response["bytes"] += len(body)
                if response["read_error"] and len(response["error"]) < _ERROR_BODY_LIMIT:
                    response["error"] += body
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if response["started"]:  # nothing sane can be sent any more; the server closes the connection
                return  # (not re-raised: the server would log the same traceback a second time)
            body = error_body("internal_error", "the server failed; this is a bug", request_id=request_id)
            await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            try:
                self._account(scope, response, time.monotonic() - started)
            finally:
                REQUEST_ID.reset(token)

    def _account(self, scope: Scope, response: dict[str, Any], elapsed: float) -> None:
        state = scope.get("state") or {}
        status = int(response["status"])
        route = self._route(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        model = state.get("model") or (query.get("model") or [""])[0]
        if model and model not in self.served():
            model = "unknown"
        priority = str(getattr(state.get("priority"), "value", state.get("priority") or ""))
        if not priority and route == "/v1/upscale":
            priority = (query.get("priority") or ["normal"])[0]
        priority = priority if priority in _PRIORITIES or not priority else "invalid"
        code = str(status)
        m = self.metrics
        m.requests.labels(route, model, priority, code, f"{status // 100}xx").inc()
        m.request_duration.labels(route, model, code).observe(elapsed)
        error = _error_code(response["error"]) if status >= 400 else None
        path = scope.get("path", "")
        if status >= 400 and path not in PROBES:  # a starting or draining server's 503 on /readyz is no refusal
            m.rejections.labels(error or f"http_{status}").inc()
        details = state.get("access") or {}
        fields = {
            "request_id": state.get("request_id"),
            "method": scope.get("method"),
            "path": path,
            "route": route,
            "status": status,
            "error": error,
            "model": model or None,
            "priority": priority or None,
            "seconds": round(elapsed, 4),
            "bytes_out": response["bytes"],
            "server_timing": response["timing"],
            "client": (scope.get("client") or ("-",))[0],
            **details,
        }
        level = logging.DEBUG if path in PROBES else logging.INFO
        if access_log.isEnabledFor(level):
            text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None and k != "request_id")
            access_log.log(level, text, extra=fields)

    def _route(self, scope: Scope) -> str:
        """The route's path template: bounded, unlike the path itself."""
        path = getattr(scope.get("route"), "path", None)
        if path:
            return path
        # Refused before routing (e.g. 413 on Content-Length): match the templates ourselves.
        if self._templates is None:
            self._templates = [(compile_path(p)[0], p) for p in self.paths()]
        return next((p for regex, p in self._templates if regex.match(scope.get("path", ""))), "unmatched")


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
        return str(error["code"]) if isinstance(error, dict) else None
    except (ValueError, AttributeError, KeyError, TypeError):
        return None


def _text(value: object) -> str:
    s = str(value)
    return f'"{s}"' if (" " in s or not s) else s
