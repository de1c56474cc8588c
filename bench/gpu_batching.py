"""Batching on the simulated H200: uploads of many sizes at 64 clients, bucketed against exact-fit windows.

    python -m bench.gpu_batching [--requests 256] [--rounds 2] [--json out.json]   # ~12 minutes on 2 cores

Side by side in one run, for each load below: srserve with shape buckets (``SR_BUCKETS=1``, the
default), srserve with today's exact-fit windows (``SR_BUCKETS=0``), and the limit of that load,
min(device, host):

- *device with full batches*: the profile's time for every image's pixels (its FLOPs, at least
  a full batch's share of the pixels that fill the device, and its bytes) with the per-batch
  cost shared by a full batch of ``SR_MAX_BATCH_TILES``;
- *host codec limit*: decode + nearest x2 + PNG encode of the same uploads in 2 processes with
  the service's codecs, nothing else running (``bench.host_path``).

Each server is ``bench.simserve --profile h200`` (``bench/sim_accelerator.py``) serving ESPCN x2,
``SR_MAX_QUEUE_WAIT_S`` out of reach (a closed loop is measured, not shed), driven by 64
closed-loop clients sending photo-like PNGs. The loads:

- ``mixed``: 20 sides from 48 to 400 px (either orientation), one upload in 16 a 1920x1080
  photo; ESPCN's own FLOPs, so the host is the bound;
- ``mixed-heavy``: the same uploads, each batch charged 400x ESPCN's FLOPs (about an ESRGAN
  RRDBNet's 36 MFLOP per LR pixel), so the device is the bound;
- ``small-heavy``: sides from 48 to 128 px only, 400x ESPCN's FLOPs.

Printed: throughput and its share of the limit, windows per batch, the device's busy ratio
(``srserve_device_busy_seconds_total`` over the wall time), admission's mean real over
predicted time to the answer (``srserve_answer_prediction_ratio``), and the computed pixels over
image pixels per size class (from each answer's ``X-Tile-Plan``). The load generator shares
the cores with the server, not with the codec limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
from dataclasses import dataclass
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


def sizes(count: int, sides: list[int] = SMALL_SIDES, large_share: bool = True, seed: int = 0) -> list[tuple[int, int]]:
    """Uploads with sides drawn from ``sides`` (either orientation); with ``large_share`` 1 in 16 a 1080p photo."""
    rng = random.Random(seed)
    return [LARGE if large_share and i % 16 == 15 else (rng.choice(sides), rng.choice(sides)) for i in range(count)]


def size_class(h: int, w: int) -> str:
    side = max(h, w)
    return "1920x1080" if (h, w) == LARGE else ("48-127" if side < 128 else "128-400")


def device_limit(shapes: list[tuple[int, int]], profile_name: str, flops_scale: float = 1.0, scale: int = 2) -> float:
    """Images/s of the simulated device alone, every batch full."""
    module, _ = get_upsampler("espcn", scale, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")
    device = SimulatedAccelerator(PROFILES[profile_name])
    profile = device.profile
    flops = flops_scale * device.model_shape(module, None).flops_per_px
    seconds = 0.0
    for h, w in shapes:
        px = h * w
        occupied = max(px, profile.full_px / MAX_BATCH)  # its share of a full batch, at least
        seconds += flops * occupied / profile.fp32_flops + 3 * px * (1 + scale**2) / profile.link_bytes_s
        seconds += profile.per_batch_s / MAX_BATCH
    return len(shapes) / seconds


def computed_ratio(headers: dict) -> float | None:
    plan = headers.get("x-tile-plan", "")
    found = re.search(r"computed ([0-9.]+)x", plan)
    return float(found.group(1)) if found else None


@dataclass(frozen=True)
class Load:
    name: str
    sides: list[int]
    large_share: bool  # one upload in 16 a 1080p photo
    flops_scale: float


#: About RRDBNet x4 (23 blocks, 64 channels): 17.9M multiply-adds per LR pixel against ESPCN x2's 45k.
HEAVY = 400.0
LOADS = [
    Load("mixed", SMALL_SIDES, True, 1.0),
    Load("mixed-heavy", SMALL_SIDES, True, HEAVY),
    Load("small-heavy", [48 + round(i * (128 - 48) / 9) for i in range(10)], False, HEAVY),
]


def run_server(load: Load, bodies: list[bytes], profile: str, use_buckets: bool, device: str = "sim") -> dict:
    env = {
        "SR_MODELS": "espcn",
        "SR_MAX_QUEUE_WAIT_S": "600",
        "SR_LOG_LEVEL": "warning",
        "SR_BUCKETS": "1" if use_buckets else "0",
    }
    if device == "sim":
        module, args = "bench.simserve", ("--profile", profile, "--flops-scale", str(load.flops_scale))
    else:  # the real server on a real device (bench/device_check.sh)
        module, args = "srserve.service", ("serve",)
        env["SR_DEVICE"] = device
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp), env, module=module, args=args) as s:
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
    return {
        "statuses": {str(c): result.statuses.count(c) for c in set(result.statuses)},
        "throughput_img_s": len(bodies) / result.seconds,
        "windows_per_batch": delta("srserve_batch_tiles_sum") / max(1.0, delta("srserve_batch_tiles_count")),
        "device_busy_ratio": delta("srserve_device_busy_seconds_total") / result.seconds,
        "computed_over_image_px": {k: statistics.mean(v) for k, v in sorted(by_class.items())},
        # From the metrics: the plans' padding and the padding of windows that topped up larger batches.
        "computed_over_image_px_all": delta("srserve_computed_pixels_total") / delta("srserve_image_pixels_total"),
        "p50_ms": result.summary()["p50_ms"],
        # Admission's honesty under this load: real over predicted time to each answer (1: right).
        "answer_over_predicted": delta("srserve_answer_prediction_ratio_sum")
        / max(1.0, delta("srserve_answer_prediction_ratio_count")),
    }


def median_run(runs: list[dict]) -> dict:
    """The round of median throughput (its other figures with it)."""
    ordered = sorted(runs, key=lambda r: r["throughput_img_s"])
    return dict(ordered[(len(ordered) - 1) // 2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gpu_batching", description=__doc__)
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--profile", default="h200", choices=sorted(PROFILES))
    p.add_argument("--loads", nargs="*", default=[load.name for load in LOADS])
    p.add_argument("--json", type=Path)
    p.add_argument("--rounds", type=int, default=2, help="rounds of both planners, alternating; medians reported")
    p.add_argument(
        "--device",
        default="sim",
        help="sim (the simulated accelerator), or a real device such as cuda: the real server on it, the loads "
        "without a FLOPs stand-in, and the limit still the simulated profile's",
    )
    args = p.parse_args(argv)
    report: dict = {
        "profile": args.profile,
        "device": args.device,
        "requests": args.requests,
        "clients": CLIENTS,
        "loads": {},
    }
    chosen = [load for load in LOADS if load.name in args.loads and (args.device == "sim" or load.flops_scale == 1)]
    for load in chosen:
        shapes = sizes(args.requests, load.sides, load.large_share)
        bodies = [png_bytes(make_image(h, w, i)) for i, (h, w) in enumerate(shapes)]
        host = codec_limit(bodies, fast=True)
        device = device_limit(shapes, args.profile, load.flops_scale)
        limit = min(device, host)
        rounds: dict[str, list[dict]] = {"buckets": [], "exact": []}
        for _ in range(args.rounds):  # alternating: this machine's speed drifts within minutes
            for name, on in (("buckets", True), ("exact", False)):
                rounds[name].append(run_server(load, bodies, args.profile, on, args.device))
        runs = {name: median_run(r) for name, r in rounds.items()}
        for name, r in runs.items():
            r["over_limit"] = r["throughput_img_s"] / limit
            print(
                f"{load.name} {name}: {r['throughput_img_s']:.1f} img/s = {r['over_limit']:.2f} of the limit "
                f"{limit:.1f} (device with full batches {device:.1f}, host codec {host:.1f}); windows per batch "
                f"{r['windows_per_batch']:.2f}; device busy {r['device_busy_ratio']:.3f}; computed px "
                + ", ".join(f"{k} {v:.3f}x" for k, v in r["computed_over_image_px"].items())
                + f" (all, batches' padding included: {r['computed_over_image_px_all']:.3f}x)"
                + f"; answer / predicted {r['answer_over_predicted']:.2f}; statuses {r['statuses']}",
                flush=True,
            )
        gains = [b["throughput_img_s"] / e["throughput_img_s"] for b, e in zip(*rounds.values(), strict=True)]
        gain = statistics.median(gains)
        print(f"{load.name}: buckets / exact fit = {gain:.2f}x (rounds {', '.join(f'{g:.2f}' for g in gains)})")
        report["loads"][load.name] = {
            "flops_scale": load.flops_scale,
            "device_limit_img_s": device,
            "host_codec_limit_img_s": host,
            "limit_img_s": limit,
            "buckets_over_exact": gain,
            "buckets_over_exact_rounds": gains,
            **runs,
            "rounds": rounds,
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
