"""Server CPU per refusal: `python -m bench.refusal_cost [W H]` (issue 28).

Two closed-loop clients of the slow test model keep the queue over a 0.6 s limit;
four senders then post distinct uploads (so none is an early resend) for 4 s.
The server's CPU (utime + stime from /proc) over the burst, less the same time with
the two fills alone, divided by the refusals. Compare with `GET /healthz`, the
cheapest answer the server gives, measured in the same run.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.server import running_server
from tests.slow_model import slow_weights_dir

HEADERS = {"content-type": "image/png"}
PARAMS = {"model": "slow"}
SECONDS = 4.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def png(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


async def measure(url: str, pid: int, body: bytes, senders: int = 4) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
        await c.post("/v1/upscale", params=PARAMS, content=body, headers=HEADERS)  # calibrates the slow model
        stop = False

        async def fill(i: int) -> None:
            while not stop:
                await c.post("/v1/upscale", params=PARAMS, content=body + b"f" * i, headers=HEADERS)

        fills = [asyncio.create_task(fill(i)) for i in (1, 2)]
        await asyncio.sleep(1.5)
        c0 = cpu_s(pid)
        await asyncio.sleep(SECONDS)
        base = cpu_s(pid) - c0
        codes: collections.Counter[int] = collections.Counter()
        sent = 0

        async def burst(j: int) -> None:
            nonlocal sent
            end = time.perf_counter() + SECONDS
            while time.perf_counter() < end:
                sent += 1
                padding = b"y" * (sent * senders + j)  # a distinct length: never an early resend
                r = await c.post("/v1/upscale", params=PARAMS, content=body + padding, headers=HEADERS)
                codes[r.status_code] += 1

        c0 = cpu_s(pid)
        await asyncio.gather(*(burst(j) for j in range(senders)))
        during = cpu_s(pid) - c0
        stop = True
        await asyncio.gather(*fills, return_exceptions=True)
        probes = 2000
        c0 = cpu_s(pid)
        for _ in range(probes):
            await c.get("/healthz")
        healthz_ms = 1000 * (cpu_s(pid) - c0) / probes
    refused = codes[503]
    print(
        f"{len(body)} B uploads: {dict(codes)}; server CPU {1000 * (during - base) / max(refused, 1):.3f} ms "
        f"a refusal; GET /healthz {healthz_ms:.3f} ms"
    )


def main() -> None:
    w, h = (int(v) for v in sys.argv[1:3]) if len(sys.argv) >= 3 else (256, 256)
    folder = Path(tempfile.mkdtemp())
    env = {
        "SR_WEIGHTS_DIR": str(slow_weights_dir(folder / "weights", 1.0)),
        "SR_MODELS": "slow",
        "SR_MAX_BATCH_TILES": "1",
        "SR_MAX_QUEUE_WAIT_S": "0.6",
    }
    with running_server(folder, env, module="tests.slow_serve") as s:
        asyncio.run(measure(s.url, s.process.pid, png(w, h)))


if __name__ == "__main__":
    main()
