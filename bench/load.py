"""Load generators and the images they send: closed loops (N clients, each
waiting for its answer) and open loops (Poisson arrivals, whatever the answers).

Shared by the benchmarks; each talks plain HTTP through the same lean client
(``bench/lean_http.py``: it takes a tenth of httpx's CPU per request from the cores
the servers are measured on), so srserve and its peers are driven the same way.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from bench.lean_http import LeanClient, Response, TransportError

#: A mixed-size load: small to mid photos, every one a different shape.
MIXED = [(256, 256), (128, 192), (300, 200), (64, 64), (512, 384), (200, 333), (480, 360), (96, 160)]


def make_image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like uint8 RGB image: smooth structure plus grain (PNG does not shrink it to nothing)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 100 * np.sin(x / (4 + seed % 5) + y / 7.0)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def images_for(sizes: list[tuple[int, int]], count: int) -> list[np.ndarray]:
    return [make_image(*sizes[i % len(sizes)], seed=i) for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Result:
    """Latencies (seconds) and statuses of one load run."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # names lower-cased
    errors: list[str] = field(default_factory=list)  # what each status 0 was

    def of(self, status: int) -> list[float]:
        return [t for t, s in zip(self.latencies, self.statuses, strict=True) if s == status]

    def summary(self) -> dict[str, float | int]:
        ok = self.of(200)
        return {
            "requests": len(self.statuses),
            "ok": len(ok),
            "throughput_img_s": len(ok) / self.seconds,
            "p50_ms": 1000 * percentile(ok, 50),
            "p99_ms": 1000 * percentile(ok, 99),
            "errors": len(self.statuses) - len(ok),
        }


@dataclass(frozen=True)
class Target:
    """Where and how to send an image: each server's leanest way of taking a PNG.

    srserve takes the raw bytes (``Content-Type: image/png``; multipart works too,
    as the upload page sends it); the LitServe peer takes base64 in JSON.
    """

    name: str
    url: str
    path: str
    params: dict
    json_base64: bool = False

    def send(self, client: LeanClient, body: bytes) -> Awaitable[Response]:
        if self.json_base64:  # encoded per request, as a client of that API must
            payload = json.dumps({"image": base64.b64encode(body).decode()}).encode()
            return client.post(self.path, params=None, body=payload, content_type="application/json")
        return client.post(self.path, params=self.params, body=body, content_type="image/png")


async def closed_loop(target: Target, bodies: list[bytes], concurrency: int) -> Result:
    """``concurrency`` clients send ``bodies`` in turn, each waiting for its answer."""
    result = Result(0.0)
    queue = list(reversed(bodies))
    async with LeanClient(target.url) as client:  # one keep-alive connection per busy worker

        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                r = await target.send(client, body)
                result.latencies.append(time.perf_counter() - t0)
                result.statuses.append(r.status_code)
                result.headers.append(r.headers)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


async def open_loop(target: Target, bodies: list[bytes], rate: float, duration: float, sources: int = 1) -> Result:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds; every answer is awaited at the end.

    ``sources`` > 1: arrival i comes from 127.0.0.<2 + i % sources>, as from that many independent users
    (a server that tells one client's resends from another's sees them as such).
    """
    rng = random.Random(0)
    result = Result(0.0)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                LeanClient(target.url, local_address=f"127.0.0.{2 + k}" if sources > 1 else None)
            )
            for k in range(sources)
        ]

        async def one(client: LeanClient, body: bytes) -> None:
            t0 = time.perf_counter()
            headers: dict[str, str] = {}
            try:
                r = await target.send(client, body)
                status, headers = r.status_code, r.headers
            except TransportError as e:
                status = 0  # connection refused or reset: counted as lost
                result.errors.append(str(e))
            result.latencies.append(time.perf_counter() - t0)
            result.statuses.append(status)
            result.headers.append(headers)

        start = time.perf_counter()
        tasks = []
        at, i = 0.0, 0
        while at < duration:
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(clients[i % sources], bodies[i % len(bodies)])))
            i += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - start
    return result
