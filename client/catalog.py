"""What the servers offer (GET /v1/models), asked once before any file is sent."""

from __future__ import annotations

from typing import Any

import httpx


class CatalogError(Exception):
    """The job cannot run as asked: no server answered, a key is missing, or the model/scale is not served."""


def fetch(urls: list[str], *, api_key: str | None, timeout_s: float) -> dict[str, Any]:
    """The first answering server's model list."""
    headers = {"X-API-Key": api_key} if api_key else {}
    problems = []
    for url in urls:
        try:
            r = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=timeout_s)
        except httpx.TransportError as e:
            problems.append(f"{url}: {type(e).__name__}")
            continue
        if r.status_code == 401:
            raise CatalogError(f"{url} needs an API key (--api-key or SRBATCH_API_KEY): {_message(r)}")
        if r.status_code == 200:
            return r.json()
        problems.append(f"{url}: HTTP {r.status_code} {_message(r)}")
    raise CatalogError("no server answered GET /v1/models: " + "; ".join(problems))


def check(catalog: dict[str, Any], model: str, scale: float | None) -> None:
    """Raise :class:`CatalogError` unless the servers serve ``model`` (at ``scale``, when given)."""
    models = {m["name"]: m for m in catalog.get("models", [])}
    if model not in models:
        raise CatalogError(f"unknown model {model!r}; the servers have: {', '.join(sorted(models))}")
    info = models[model]
    scales = info.get("scales") or []
    if scale is None or info.get("any_scale"):
        return
    if not scales and catalog.get("status") != "ready":  # still loading: the server will judge each file
        return
    if scale not in scales:
        raise CatalogError(f"model {model!r} has scales {scales}, not {scale:g}")


def check_restore(catalog: dict[str, Any], name: str) -> None:
    """Raise :class:`CatalogError` unless ``name`` is a restoration model the servers have."""
    restorers = sorted(m["name"] for m in catalog.get("models", []) if m.get("task", "upscale") != "upscale")
    if name not in restorers:
        raise CatalogError(f"--restore {name!r} is not a restoration model the servers have: {restorers}")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
