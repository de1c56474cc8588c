"""The admission gate: ASGI middleware in front of FastAPI for ``POST /v1/upscale``.

Under overload most uploads are refused on the queue ahead of them alone, and
such a refusal must cost next to nothing: routing, parameter validation and
dependency resolution cost the server more than the decision. So the gate makes
it here, on the headers, before the upload is read or FastAPI sees the request;
the route judges the rest (a request's own size, after its header is read).

The gate also holds early resends of refused uploads (see :mod:`.retries`) and
learns from every refusal, its own and the route's (the route marks its
refusals on the request's state as ``refused_retry_after``).

Requests the route would answer otherwise (a bad API key: 401; a bad
``priority``: 422; a server not ready: 503 ``not_ready``) pass through
untouched, so that the gate never changes what an answer says.
"""

from __future__ import annotations

import asyncio
import math
import time
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from srserve.service.admission import Priority, QueueFull
from srserve.service.deps import key_is_valid
from srserve.service.errors import APIError, response_for
from srserve.service.retries import client_of, fingerprint
from srserve.service.runtime import Phase, Runtime

PATH = "/v1/upscale"


def refusal(e: QueueFull, limit_s: float) -> APIError:
    """The 503 of a refusal: what was predicted, the limit, and when to come back."""
    limits = {"max_queue_wait_s": limit_s}
    if e.predicted_s is not None:
        limits["predicted_answer_s"] = round(e.predicted_s, 3)
    return APIError(
        503,
        e.reason,
        f"the server is busy: {e}; retry later",
        headers={"Retry-After": str(math.ceil(e.retry_after))},
        limits=limits,
    )


class AdmissionGate:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        key, client = fingerprint(scope), client_of(scope)
        state = scope.setdefault("state", {})
        hold = runtime.retries.early(key, time.monotonic(), client)
        if hold is not None:
            await self._hold(state, hold)
        elif runtime.retries.demoted(client, time.monotonic()):
            state["demoted"] = True  # it resent early a little while ago
        priority = self._priority(scope, state)
        if priority is not None:
            try:
                runtime.engine.check_wait(priority)
            except QueueFull as e:
                runtime.retries.refused(key, e.retry_after, time.monotonic())
                state["priority"] = priority
                await response_for(refusal(e, runtime.engine.max_queue_wait_s))(scope, receive, send)
                return
        try:
            await self.app(scope, receive, send)
        finally:
            retry_after = state.pop("refused_retry_after", None)
            if retry_after is not None:
                runtime.retries.refused(key, retry_after, time.monotonic())

    async def _hold(self, state: dict, seconds: float) -> None:
        """Sleep out an early resend's Retry-After (no CPU; not judged meanwhile); it goes on at low priority."""
        state["demoted"] = True
        state.setdefault("access", {})["held_s"] = round(seconds, 3)
        retries = self.runtime.retries
        retries.held += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            retries.held -= 1

    def _priority(self, scope: Scope, state: dict) -> Priority | None:
        """The priority to judge at, or None when the route must answer this request itself."""
        runtime = self.runtime
        if runtime.phase not in (Phase.READY, Phase.DRAINING) or not self._key_ok(scope):
            return None
        if state.get("demoted"):
            return Priority.LOW
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("priority", ["normal"])
        try:
            return Priority(asked[-1])
        except ValueError:
            return None  # the route's 422 says what is allowed

    def _key_ok(self, scope: Scope) -> bool:
        keys = self.runtime.settings.api_keys
        if not keys:
            return True
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"x-api-key", b"").decode("latin-1")
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if not key and bearer[:7].lower() == "bearer ":
            key = bearer[7:].strip()
        return bool(key) and key_is_valid(key, keys)
