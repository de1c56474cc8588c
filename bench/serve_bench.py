"""One serving configuration against the model-only bound, on any device (the GPU run uses it).

    python -m bench.serve_bench --model espcn --scale 4 --size 960x540 --concurrency 32 --requests 256

Starts srserve with the ``SR_*`` settings of the environment, drives it with a
closed loop of N concurrent PNG uploads, and times the same model on the same
whole images with no tiles, no codec and no HTTP (batch 1 and batch 8; the
faster is the bound). Prints and optionally writes throughput, p50/p99, the
computed-pixel overhead and service / bound. Numbers only, no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.load import Target, closed_loop, images_for, png_bytes
from srserve.models.allocator import keep_large_allocations
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service.inference import predict
from srserve.service.runtime import resolve_device
from tests.server import metric_value, running_server


def model_bound(model: str, scale: int, images: list[np.ndarray], precision: str, repeats: int = 3) -> dict:
    """Images/s of the bare model on whole images (uint8 in and out, on the device), batch 1 and 8."""
    device = resolve_device(os.environ.get("SR_DEVICE", "auto"))
    module, _ = get_upsampler(model, scale, weights_dir=DEFAULT_WEIGHTS_DIR, device=device)
    out = {}
    for batch in (1, 8):
        stacks = [np.stack(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)]
        predict(module, stacks[0], device=device, precision=precision)  # warm-up
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            for s in stacks:
                predict(module, s, device=device, precision=precision)
            best = max(best, sum(len(s) for s in stacks) / (time.perf_counter() - start))
        out[f"batch{batch}_img_s"] = best
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="serve_bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--size", default="256x256", help="WxH of the LR uploads")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    keep_large_allocations()  # as srserve does: the limit is measured with the same allocator
    w, h = (int(v) for v in args.size.lower().split("x"))
    images = images_for([(h, w)], min(args.requests, 32))
    bodies = [png_bytes(im) for im in images]
    bodies = [bodies[i % len(bodies)] for i in range(args.requests)]
    env = {
        "SR_LOG_LEVEL": "warning",
        "SR_MAX_QUEUE_WAIT_S": os.environ.get("SR_MAX_QUEUE_WAIT_S", "600"),  # a closed loop: measure, do not shed
        "SR_PRECISION": json.dumps({args.model: args.precision}),
        "SR_MAX_OUTPUT_PIXELS": str(max(8192 * 8192, w * h * args.scale**2)),
    }
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), env) as server:
        target = Target("srserve", server.url, "/v1/upscale", {"model": args.model, "scale": args.scale})
        asyncio.run(closed_loop(target, bodies[: args.concurrency], args.concurrency))  # warm-up
        before = server.metrics()
        result = asyncio.run(closed_loop(target, bodies, args.concurrency))
        after = server.metrics()
        plan = result.headers[0].get("x-tile-plan") if result.headers else None
        device = httpx.get(f"{server.url}/readyz").json().get("device")

    def delta(name: str) -> float:
        return metric_value(after, name) - metric_value(before, name)

    service = result.summary()
    service["computed_px_per_image_px"] = delta("srserve_computed_pixels_total") / max(
        1.0, delta("srserve_image_pixels_total")
    )
    service["windows_per_batch"] = delta("srserve_batch_tiles_sum") / max(1.0, delta("srserve_batch_tiles_count"))
    service["tile_plan"] = plan
    bound = model_bound(args.model, args.scale, images[:16], args.precision)
    best_bound = max(bound.values())
    report = {
        "config": {
            **vars(args),
            "json": None,
            "device": device,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "max_batch_tiles": os.environ.get("SR_MAX_BATCH_TILES", "16"),
            "tile_size": os.environ.get("SR_TILE_SIZE", "1024"),
        },
        "service": service,
        "model_bound": bound,
        "service_over_bound": service["throughput_img_s"] / best_bound,
    }
    print(
        f"{args.model} x{args.scale} {args.size} {args.precision} c{args.concurrency} "
        f"max_batch_tiles={report['config']['max_batch_tiles']}: service {service['throughput_img_s']:.2f} img/s "
        f"(p50 {service['p50_ms']:.0f} ms, p99 {service['p99_ms']:.0f} ms, {service['windows_per_batch']:.1f} "
        f"windows/batch, computed {service['computed_px_per_image_px']:.3f}x, {plan}); model alone "
        f"{bound['batch1_img_s']:.2f} (batch 1) / {bound['batch8_img_s']:.2f} (batch 8) img/s; "
        f"service / bound {report['service_over_bound']:.2f}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
