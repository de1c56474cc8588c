"""Batching on the simulated H200: uploads of many sizes at 64 clients, against the limit of that load.

    python -m bench.gpu_batching [--requests 256] [--json out.json]      # ~2 minutes on 2 cores

Side by side in one run:

- **srserve** on ``bench.simserve --profile h200`` (``bench/sim_accelerator.py``), ESPCN x2,
  ``SR_MAX_QUEUE_WAIT_S`` out of reach (a closed loop is measured, not shed), driven by
  64 closed-loop clients sending photo-like PNGs: 20 sizes from 48 to 400 px a side,
  and one upload in 16 a 1920x1080 photo;
- **the limit of that load**, min(device, host):
  * *device with full batches*: the profile's time for every image's pixels (its FLOPs
    and bytes) with the per-batch cost shared by a full batch of ``SR_MAX_BATCH_TILES``;
  * *host codec limit*: decode + nearest x2 + PNG encode of the same uploads in 2
    processes with the service's codecs, nothing else running (``bench.host_path``).

Printed: throughput and its share of the limit, windows per batch, the device's busy
ratio (``srserve_device_busy_seconds_total`` over the wall time), and the computed
pixels over image pixels per size class (from each answer's ``X-Tile-Plan``). The
load generator shares the cores with the server, not with the codec limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
from pathlib import Path

from bench.host_path import codec_limit
from bench.load import Target, closed_loop, make_image, png_bytes
from bench.sim_accelerator import PROFILES, SimulatedAccelerator
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from tests.server import metric_value, running_server

CLIENTS = 64
SMALL_SIDES = [48 + round(i * (400 - 48) / 19) for i in range(20)]
LARGE = (1080, 1920)
MAX_BATCH = 16  # the server's default SR_MAX_BATCH_TILES


def sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Mixed uploads: 15 in 16 of sides drawn from 48-400 px (either orientation), 1 in 16 a 1080p photo."""
    rng = random.Random(seed)
    return [LARGE if i % 16 == 15 else (rng.choice(SMALL_SIDES), rng.choice(SMALL_SIDES)) for i in range(count)]


def size_class(h: int, w: int) -> str:
    side = max(h, w)
    return "1920x1080" if (h, w) == LARGE else ("48-127" if side < 128 else "128-400")


def device_limit(shapes: list[tuple[int, int]], profile_name: str, scale: int = 2) -> float:
    """Images/s of the simulated device alone, every batch full."""
    module, _ = get_upsampler("espcn", scale, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")
    device = SimulatedAccelerator(PROFILES[profile_name])
    profile = device.profile
    flops = device.model_shape(module, None).flops_per_px
    seconds = 0.0
    for h, w in shapes:
        px = h * w
        seconds += flops * px / profile.fp32_flops + 3 * px * (1 + scale**2) / profile.link_bytes_s
        seconds += profile.per_batch_s / MAX_BATCH
    return len(shapes) / seconds


def computed_ratio(headers: dict) -> float | None:
    plan = headers.get("x-tile-plan", "")
    found = re.search(r"computed ([0-9.]+)x", plan)
    return float(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gpu_batching", description=__doc__)
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--profile", default="h200", choices=sorted(PROFILES))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    shapes = sizes(args.requests)
    bodies = [png_bytes(make_image(h, w, i)) for i, (h, w) in enumerate(shapes)]
    host = codec_limit(bodies, fast=True)
    device = device_limit(shapes, args.profile)
    env = {"SR_MODELS": "espcn", "SR_MAX_QUEUE_WAIT_S": "600", "SR_LOG_LEVEL": "warning"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp), env, module="bench.simserve", args=("--profile", args.profile)) as s,
    ):
        target = Target("srserve", s.url, "/v1/upscale", {"model": "espcn", "scale": 2})
        asyncio.run(closed_loop(target, bodies[:CLIENTS], CLIENTS))  # warm-up: every connection, some shapes
        before = s.metrics()
        result = asyncio.run(closed_loop(target, bodies, CLIENTS))
        after = s.metrics()

    def delta(name: str) -> float:
        return metric_value(after, name) - metric_value(before, name)

    by_class: dict[str, list[float]] = {}
    for headers in result.headers:  # answers come in any order: each says its own size
        ratio, out = computed_ratio(headers), headers.get("x-output-size")
        if ratio is not None and out:
            w, h = (int(v) // 2 for v in out.split("x"))
            by_class.setdefault(size_class(h, w), []).append(ratio)
    throughput = len(bodies) / result.seconds
    limit = min(device, host)
    report = {
        "profile": args.profile,
        "requests": len(bodies),
        "clients": CLIENTS,
        "statuses": {str(c): result.statuses.count(c) for c in set(result.statuses)},
        "throughput_img_s": throughput,
        "device_limit_img_s": device,
        "host_codec_limit_img_s": host,
        "limit_img_s": limit,
        "over_limit": throughput / limit,
        "windows_per_batch": delta("srserve_batch_tiles_sum") / max(1.0, delta("srserve_batch_tiles_count")),
        "device_busy_ratio": delta("srserve_device_busy_seconds_total") / result.seconds,
        "computed_over_image_px": {k: statistics.mean(v) for k, v in sorted(by_class.items())},
    }
    print(
        f"{args.profile}: {throughput:.1f} img/s = {report['over_limit']:.2f} of the limit {limit:.1f} "
        f"(device with full batches {device:.0f}, host codec {host:.1f}); windows per batch "
        f"{report['windows_per_batch']:.2f}; device busy {report['device_busy_ratio']:.3f}; computed px "
        + ", ".join(f"{k} {v:.3f}x" for k, v in report["computed_over_image_px"].items())
        + f"; statuses {report['statuses']}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
