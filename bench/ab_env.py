"""Variants of srserve's settings side by side: the same closed loop against each, alternating.

    python -m bench.ab_env SR_GIL_SWITCH_MS=5 SR_GIL_SWITCH_MS=0.5            # ~4 minutes on 2 cores
    python -m bench.ab_env default SR_CPU_LANES=1 --size 512x512 --rounds 3

Each argument is one server: ``default`` or ``NAME=VALUE[,NAME=VALUE...]`` added to its
environment (beside ``SR_MAX_QUEUE_WAIT_S=600``: a closed loop is measured, not shed).
All start once; the ones not driven are stopped (SIGSTOP), and rounds alternate the order,
so the drift of this shared machine hits every variant alike. Prints each variant's
throughput per round (16 clients of espcn x2 by default). Numbers only, no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.load import Target, closed_loop, images_for, png_bytes
from tests.server import running_server


def variant_env(spec: str) -> dict[str, str]:
    """``default`` -> {}; ``A=1,B=2`` -> {"A": "1", "B": "2"}."""
    if spec == "default":
        return {}
    return dict(part.split("=", 1) for part in spec.split(","))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.ab_env", description=__doc__)
    p.add_argument("variants", nargs="+", help="default, or NAME=VALUE[,NAME=VALUE...]")
    p.add_argument("--size", default="256x256", help="WxH of the uploads")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--model", default="espcn")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    bodies = [png_bytes(im) for im in images_for([(h, w)], args.requests)]
    base = {"SR_LOG_LEVEL": "warning", "SR_MAX_QUEUE_WAIT_S": "600"}
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers = {v: stack.enter_context(running_server(Path(tmp), base | variant_env(v))) for v in args.variants}
        for s in servers.values():
            os.kill(s.process.pid, signal.SIGSTOP)
        try:
            for r in range(args.rounds):
                order = args.variants if r % 2 == 0 else args.variants[::-1]
                for v in order:
                    s = servers[v]
                    os.kill(s.process.pid, signal.SIGCONT)
                    target = Target("srserve", s.url, "/v1/upscale", {"model": args.model, "scale": 2})
                    asyncio.run(closed_loop(target, bodies[: args.clients], args.clients))  # warm-up
                    result = asyncio.run(closed_loop(target, bodies, args.clients))
                    os.kill(s.process.pid, signal.SIGSTOP)
                    results[v].append(result.summary()["throughput_img_s"])
                    print(f"round {r + 1} {v}: {results[v][-1]:.2f} img/s", flush=True)
        finally:
            for s in servers.values():
                os.kill(s.process.pid, signal.SIGCONT)
    for v, values in results.items():
        print(f"{v}: " + ", ".join(f"{x:.1f}" for x in values) + " img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
