"""The app in this process, through its ASGI interface, with its lifespan (models loaded and warm)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from srserve.service.app import create_app
from srserve.service.settings import Settings


@contextmanager
def app_client(ready_timeout: float = 120.0, **overrides: Any) -> Iterator[TestClient]:
    """A TestClient on ``create_app(Settings(**overrides))`` once ``/readyz`` says ready (CPU by default)."""
    settings = Settings(**{"device": "cpu", **overrides})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        deadline = time.monotonic() + ready_timeout
        while (ready := client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, f"not ready after {ready_timeout} s: {ready.text}"
            time.sleep(0.05)
        yield client


def sample(client: TestClient, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the app's metrics (0 when it has not been recorded yet)."""
    value = client.app.state.runtime.metrics.registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return value or 0.0
