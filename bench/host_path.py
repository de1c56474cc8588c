"""The host side of a GPU server, measured with the almost free ``nearest`` x2 model on this CPU.

    python -m bench.host_path [--rounds 2] [--json out.json]

Side by side in one run, for 16 closed-loop clients sending photo-like PNGs
(256x256 and 1024x768) and asking for x2 PNG:

- **codec limit (Pillow)**: Pillow decode + nearest x2 (``np.repeat``) + Pillow PNG
  encode (level 1, Z_RLE), in 2 processes (one per core), nothing else running: what
  the request path before this work could at best reach on these cores;
- **codec limit (fast)**: the same with the service's fast codecs (``Codecs()``);
- **srserve** with default settings but ``SR_MAX_QUEUE_WAIT_S`` out of reach (a
  closed loop is measured, not shed), ``model=nearest``;
- **LitServe 0.2.19** doing the same work (``bench/litserve_peer.py --model nearest``).

The load generator shares the cores with the servers, not with the codec limits.
The servers not measured are stopped (SIGSTOP); each round alternates their order
and times the limits right beside them. Medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.compare import litserve_peer, running, stop_controls
from bench.load import Target, closed_loop, images_for, png_bytes
from srserve.service.fast_codecs import Codecs
from srserve.service.imageio import decode, encode
from tests.server import running_server

LOADS = {"256x256": ((256, 256), 320), "1024x768": ((768, 1024), 40)}
CLIENTS = 16


def _codec_work(bodies: list[bytes], fast: bool) -> int:
    codecs = Codecs(io_threads=2) if fast else None
    for data in bodies:
        image = decode(data, max_pixels=10**9, codecs=codecs)
        out = image.pixels.repeat(2, 0).repeat(2, 1)
        encode(out, None, grey=False, fmt="png", quality=90, icc_profile=None, codecs=codecs)
    return len(bodies)


def codec_limit(bodies: list[bytes], fast: bool, processes: int = 2) -> float:
    """Images/s of decode + nearest x2 + encode in ``processes`` processes, nothing else."""
    shares = [bodies[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_codec_work, [s[:2] for s in shares], [fast] * processes))  # warm-up
        start = time.perf_counter()
        done = sum(pool.map(_codec_work, shares, [fast] * processes))
        return done / (time.perf_counter() - start)


def drive(target: Target, bodies: list[bytes]) -> dict:
    asyncio.run(closed_loop(target, bodies[:CLIENTS], CLIENTS))  # warm-up, unmeasured
    return asyncio.run(closed_loop(target, bodies, CLIENTS)).summary()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.host_path", description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--env", nargs="*", default=[], metavar="SR_X=V", help="more server settings (SR_PNG_ENCODER=pillow)"
    )
    args = p.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="host-path-"))
    env = {"SR_MODELS": "nearest", "SR_MAX_QUEUE_WAIT_S": "600", **dict(kv.split("=", 1) for kv in args.env)}
    params = {"model": "nearest", "scale": 2}
    results: dict = {name: {} for name in LOADS}
    with running_server(log_dir, env) as srv, litserve_peer("nearest", 2, log_dir) as (lit, group):
        targets = {"srserve": Target("srserve", srv.url, "/v1/upscale", params), "litserve": lit}
        controls = stop_controls(srv.process.pid, group)
        try:
            for round_ in range(args.rounds):
                order = ("srserve", "litserve") if round_ % 2 == 0 else ("litserve", "srserve")
                for name, (size, count) in LOADS.items():
                    bodies = [png_bytes(im) for im in images_for([size], count)]
                    row = {
                        "codec limit (Pillow)": codec_limit(bodies, fast=False),
                        "codec limit (fast)": codec_limit(bodies, fast=True),
                    }
                    for server in order:
                        with running(*controls[server]):
                            r = drive(targets[server], bodies)
                        row[server] = r["throughput_img_s"]
                        row[f"{server} p50 ms"] = r["p50_ms"]
                        row[f"{server} errors"] = r["errors"]
                    print(
                        f"round {round_ + 1} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True
                    )
                    for k, v in row.items():
                        results[name].setdefault(k, []).append(v)
        finally:
            for _, resume in controls.values():
                resume()
    summary = {name: {k: statistics.median(v) for k, v in row.items()} for name, row in results.items()}
    columns = ["codec limit (Pillow)", "codec limit (fast)", "srserve", "LitServe", "srserve / Pillow limit"]
    print("\n| load | " + " | ".join([*columns, "srserve / LitServe"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summary.items():
        print(
            f"| {name}, {CLIENTS} clients | {s['codec limit (Pillow)']:.1f} | {s['codec limit (fast)']:.1f} | "
            f"{s['srserve']:.1f} | {s['litserve']:.1f} | {s['srserve'] / s['codec limit (Pillow)']:.2f} | "
            f"{s['srserve'] / s['litserve']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rounds": results, "median": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
