"""Serving benchmark: N concurrent clients on loopback against a real srserve,
then the raw batched model loop on the same tiles, and their ratio.

    python -m bench.serve_bench --model espcn --scale 2 --size 256 --concurrency 16

Reports throughput (images/s), p50/p95/p99 latency, mean tiles per batch (from
/metrics), the raw loop's throughput and service/raw. Not a test: numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from service import planner
from service.inference import predict
from service.launcher import metric_value, running_server
from service.model_pool import ModelPool
from service.runtime import resolve_device
from service.settings import Settings
from service.tiling import cut

MIXED = [(256, 256), (128, 192), (300, 200), (64, 64), (512, 384), (200, 333)]


def make_images(count: int, size: int | None, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = (size, size) if size else MIXED[i % len(MIXED)]
        y, x = np.mgrid[0:h, 0:w]
        base = 128 + 100 * np.sin(x / (4 + i % 5) + y / 7.0)[..., None] * np.array([1.0, 0.8, 0.6])
        out.append(np.clip(base + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8))
    return out


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def load(url: str, bodies: list[bytes], params: dict, concurrency: int) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    statuses: list[int] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                body = bodies[next_index]
                next_index += 1
                t0 = time.perf_counter()
                r = await client.post("/v1/upscale", params=params, content=body, headers={"Content-Type": "image/png"})
                latencies.append(time.perf_counter() - t0)
                statuses.append(r.status_code)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


def raw_loop(images: list[np.ndarray], settings: Settings, model: str, scale: int, repeats: int) -> float:
    """Images/s of the same tiles through ``predict`` in full batches, nothing else."""
    pool = ModelPool(
        device=resolve_device(settings.device),
        weights_dir=settings.weights_dir,
        enabled=[model],
        window=settings.tile_size,
    )
    pool.load()
    route = pool.resolve(model, in_size=images[0].shape[:2], scale=scale)
    by_shape: dict[tuple[int, int], list[np.ndarray]] = {}
    for im in images:
        for t in planner.choose(
            *im.shape[:2], halo=route.entry.radius, max_side=pool.window, cost=route.entry.cost
        ).tiles:
            by_shape.setdefault(t.shape, []).append(cut(im, t))
    batches = [
        np.stack(tiles[i : i + settings.max_batch_tiles])
        for tiles in by_shape.values()
        for i in range(0, len(tiles), settings.max_batch_tiles)
    ]
    predict(route.entry.module, batches[0], device=pool.device)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for b in batches:
            predict(route.entry.module, b, device=pool.device, precision=route.entry.precision)
    if pool.device.type == "cuda":
        torch.cuda.synchronize()
    return repeats * len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="serve_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--size", type=int, default=256, help="square input side; 0 for mixed sizes")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--format", default="png")
    p.add_argument("--url", help="an already running server (default: start one)")
    p.add_argument("--raw-repeats", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    settings = Settings()  # SR_* variables shape both the server and the raw loop
    images = make_images(args.requests, args.size or None)
    bodies = [png_bytes(im) for im in images]
    params = {"model": args.model, "scale": args.scale, "format": args.format}

    def run(url: str, metrics_text: callable) -> dict:
        asyncio.run(load(url, bodies[: args.concurrency], params, args.concurrency))  # warm-up
        before = metrics_text()
        latencies, statuses, elapsed = asyncio.run(load(url, bodies, params, args.concurrency))
        after = metrics_text()
        tiles = metric_value(after, "srserve_batch_tiles_sum") - metric_value(before, "srserve_batch_tiles_sum")
        batches = metric_value(after, "srserve_batch_tiles_count") - metric_value(before, "srserve_batch_tiles_count")
        ok = statuses.count(200)
        return {
            "throughput_img_s": ok / elapsed,
            "ok": ok,
            "errors": len(statuses) - ok,
            "p50_ms": 1000 * percentile(latencies, 50),
            "p95_ms": 1000 * percentile(latencies, 95),
            "p99_ms": 1000 * percentile(latencies, 99),
            "mean_latency_ms": 1000 * statistics.fmean(latencies),
            "mean_tiles_per_batch": tiles / batches if batches else float("nan"),
            "seconds": elapsed,
        }

    if args.url:
        service = run(args.url, lambda: httpx.get(f"{args.url}/metrics").text)
    else:
        with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
            service = run(server.url, server.metrics)
    raw = raw_loop(images, settings, args.model, args.scale, args.raw_repeats)

    result = {
        "config": {
            **params,
            "size": args.size or "mixed",
            "concurrency": args.concurrency,
            "requests": args.requests,
            "tile_size": settings.tile_size,
            "max_batch_tiles": settings.max_batch_tiles,
            "max_batch_delay_ms": settings.max_batch_delay_ms,
            "device": str(resolve_device(settings.device)),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "service": service,
        "raw_loop_img_s": raw,
        "ratio": service["throughput_img_s"] / raw,
    }
    s = service
    print(
        f"service   {s['throughput_img_s']:8.2f} img/s  p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  "
        f"p99 {s['p99_ms']:7.1f} ms  tiles/batch {s['mean_tiles_per_batch']:.2f}  errors {s['errors']}"
    )
    print(f"raw loop  {raw:8.2f} img/s")
    print(f"ratio     {result['ratio']:8.3f}  (service / raw loop)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
