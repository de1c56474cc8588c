"""Where the host time of a request goes: py-spy on the real server under the ``nearest`` x2 load.

    python -m bench.profile_host [--size 256x256] [--model nearest] [--native] [--seconds 12] [--out profile.txt]

16 closed-loop clients send photo-like PNGs to a fresh server (``SR_MODELS=nearest``,
the limit out of reach) while ``py-spy record --threads --nonblocking`` samples it at
200 Hz; prints the share of samples per thread, and the functions with the most samples
of their own and inclusive (idle threads are not sampled). The raw collapsed stacks
go to ``--out`` (flame-graph tools read them).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load import Target, closed_loop, images_for, png_bytes
from tests.server import running_server


def frame_name(frame: str) -> str:
    """``fn (path/to/file.py:12)`` -> ``fn (file.py)``."""
    return re.sub(r" \((?:.*/)?([^/:]+):\d+\)", r" (\1)", frame)


def summary(raw: str, top: int) -> str:
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        threads[re.sub(r"thread \(0x[0-9a-f]+\)|\(\d+\)", "", frames[0]).strip()] += n
        own[frame_name(frames[-1])] += n
        for name in {frame_name(f) for f in frames[1:]}:
            inclusive[name] += n
    out = [f"{total} samples"]
    for title, counter, k in (("threads", threads, 8), ("own", own, top), ("inclusive", inclusive, top * 2)):
        out.append(f"-- {title}")
        out += [f"{n / total:6.1%}  {name}" for name, n in counter.most_common(k)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profile_host", description=__doc__)
    p.add_argument("--size", default="256x256", help="WxH of the uploads")
    p.add_argument("--model", default="nearest", help="nearest (the host side alone) or a real model, e.g. espcn")
    p.add_argument("--native", action="store_true", help="sample native frames too (torch, codecs)")
    p.add_argument("--seconds", type=int, default=12)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=Path("profile-host.txt"))
    args = p.parse_args(argv)
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    w, h = (int(v) for v in args.size.split("x"))
    per_s = 300 if args.model == "nearest" else 20  # enough uploads to outlast the sampling
    bodies = [png_bytes(im) for im in images_for([(h, w)], max(64, int(args.seconds * per_s * 65536 / (w * h))))]
    env = {"SR_MODELS": args.model, "SR_MAX_QUEUE_WAIT_S": "600"}
    with running_server(Path(tempfile.mkdtemp(prefix="profile-")), env) as server:
        target = Target("srserve", server.url, "/v1/upscale", {"model": args.model, "scale": 2})
        asyncio.run(closed_loop(target, bodies[:32], 16))  # warm-up
        record = [spy, "record", "--pid", str(server.process.pid), "--rate", "200", "--format", "raw"]
        record += ["--threads", "--nonblocking", "--duration", str(args.seconds), "-o", str(args.out)]
        record += ["--native"] if args.native else []
        sampler = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result = asyncio.run(closed_loop(target, bodies, 16)).summary()
        sampler.wait()
    print(f"{args.size}: {result['throughput_img_s']:.1f} img/s, p50 {result['p50_ms']:.0f} ms")
    print(summary(args.out.read_text(), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
