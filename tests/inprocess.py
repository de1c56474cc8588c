"""The app in this process, through its ASGI interface, with its lifespan (models loaded and warm)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from srserve.service.app import create_app
from srserve.service.settings import Settings
from tests import imagegen

# Small limits, so that tests reach them with small images.
LIMITS = {"max_upload_bytes": 2_000_000, "max_input_pixels": 250_000, "max_output_pixels": 1_000_000}


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


def png(image: Image.Image) -> bytes:
    return imagegen.encode(image, "PNG")


def png_of(pixels: np.ndarray) -> bytes:
    return imagegen.encode(Image.fromarray(pixels), "PNG")


def pixels_of(response: httpx.Response) -> np.ndarray:
    """The RGB pixels of a 200 answer."""
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def upload(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    """POST ``data`` to /v1/upscale as a multipart PNG file, ``params`` in the query."""
    return client.post("/v1/upscale", params=params, files={"image": ("in.png", data, "image/png")})


def opened(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The JSON error body of a ``status`` answer (with ``code``): every error says what was wrong."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error
