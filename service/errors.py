"""One JSON error shape for every 4xx/5xx: what was wrong and what is allowed.

``{"error": {"code": ..., "message": ..., "field": ..., "allowed": [...], "limits": {...}}}``,
documented in the OpenAPI schema as :class:`ErrorBody`. ``allowed`` is always a
list (the values that would have been accepted); a limit that was passed is in
``limits`` (its setting's name and value).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class Problem(BaseModel):
    """One invalid parameter."""

    field: str | None
    message: str
    allowed: list[Any] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    allowed: list[Any] | None = None
    limits: dict[str, float] | None = None
    problems: list[Problem] | None = None
    parameters: list[str] | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: what was wrong and what is allowed."""

    error: ErrorDetail


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, each with the :class:`ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()}


class APIError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        allowed: list[Any] | None = None,
        limits: dict[str, float] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.allowed, self.limits, self.headers = field, allowed, limits, headers


def error_body(
    code: str,
    message: str,
    *,
    field: str | None = None,
    allowed: list[Any] | None = None,
    limits: dict[str, float] | None = None,
    **extra: Any,
) -> dict:
    """The JSON of an :class:`ErrorBody`; the one place error answers are built."""
    if allowed is not None and not isinstance(allowed, list):
        raise TypeError(f"allowed must be a list, not {type(allowed).__name__}")
    error: dict[str, Any] = {"code": code, "message": message}
    for key, value in (("field", field), ("allowed", allowed), ("limits", limits)):
        if value is not None:
            error[key] = value
    error.update(extra)
    return {"error": error}


def expected_values(expected: str) -> list[str]:
    """Pydantic's ``"'png', 'jpeg' or 'webp'"`` as a list."""
    return re.findall(r"'([^']*)'", expected) or [expected]


def too_large(limit: int) -> JSONResponse:
    """The 413 for an upload over ``limit`` bytes, refused on Content-Length or while streaming."""
    body = error_body(
        "upload_too_large",
        f"the upload is larger than the limit of {limit} bytes",
        field="image",
        limits={"max_upload_bytes": limit},
    )
    return JSONResponse(body, status_code=413, headers={"Connection": "close"})


def _validation_problem(err: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "body")]
    problem: dict[str, Any] = {"field": ".".join(loc) or None, "message": err.get("msg", "invalid")}
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        problem["allowed"] = expected_values(str(ctx["expected"]))
    for bound in ("ge", "gt", "le", "lt"):
        if bound in ctx:
            problem[bound] = ctx[bound]
    if err.get("type") == "extra_forbidden":
        problem["message"] = "unknown parameter"
    return problem


def response_for(exc: APIError) -> JSONResponse:
    body = error_body(exc.code, exc.message, field=exc.field, allowed=exc.allowed, limits=exc.limits)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def install(app: FastAPI, allowed_params: dict[str, list[str]] | None = None) -> None:
    """Register the JSON handlers on ``app``."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_validation_problem(e) for e in exc.errors()]
        first = problems[0] if problems else {"field": None, "message": "invalid request"}
        message = "; ".join(f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems)
        params = (allowed_params or {}).get(request.url.path)
        allowed = first.get("allowed") or (params if first["message"] == "unknown parameter" else None)
        body = error_body(
            "invalid_parameter",
            message,
            field=first["field"],
            allowed=allowed,
            problems=problems,
            parameters=params,
        )
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            paths = sorted(app.openapi().get("paths", {}))
            body = error_body("not_found", f"no endpoint at {request.url.path}", allowed=paths)
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            body = error_body(
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
                allowed=[m.strip() for m in allow.split(",") if m.strip()],
            )
        else:
            body = error_body(f"http_{exc.status_code}", str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
