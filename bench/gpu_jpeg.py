"""JPEG on the GPU (nvJPEG through torchvision) against libjpeg-turbo on the host: does SR_GPU_JPEG pay?

    python -m bench.gpu_jpeg [--json out.json]      # on a CUDA machine (bench/device_check.sh runs it)

For 1024x768 (decode: the upload) and 2048x1536 (encode: the x2 answer) photo-like
images, through the service's own ``imageio.decode`` / ``encode``, one thread and
then 16 threads at once (as the I/O pool would): wall ms and host CPU ms per
megapixel, the images per nvJPEG call (the calls of all threads are batched), and
how far nvJPEG's pixels are from libjpeg-turbo's. What decides it
on a GPU host is the CPU: SR_GPU_JPEG pays where its host CPU per MP is well
under libjpeg-turbo's and its wall time does not grow with concurrency.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.load import make_image
from srserve.service.fast_codecs import Codecs
from srserve.service.gpu_jpeg import GpuJpeg
from srserve.service.imageio import decode, encode


def timed(fn, calls: int, threads: int) -> tuple[float, float]:
    """(wall s, process CPU s) of ``calls`` calls spread over ``threads``."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: fn(), range(threads)))  # warm-up, each thread
        wall, cpu = time.perf_counter(), time.process_time()
        list(pool.map(lambda _: fn(), range(calls)))
        return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.gpu_jpeg", description=__doc__)
    p.add_argument("--calls", type=int, default=64)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cpu, gpu = Codecs(), Codecs(gpu_jpeg=GpuJpeg(torch.device("cuda")))
    upload = encode(make_image(768, 1024, 0), None, grey=False, fmt="jpeg", quality=90, icc_profile=None)
    answer = make_image(1536, 2048, 1)
    rows = []
    for op, mp, run in [
        ("decode 1024x768", 0.786, lambda c: decode(upload, max_pixels=10**9, codecs=c)),
        (
            "encode 2048x1536",
            3.146,
            lambda c: encode(answer, None, grey=False, fmt="jpeg", quality=90, icc_profile=None, codecs=c),
        ),
    ]:
        for threads in (1, 16):
            for name, codecs in (("libjpeg-turbo", cpu), ("nvJPEG", gpu)):
                if codecs.gpu_jpeg is not None:
                    codecs.gpu_jpeg.batch_sizes.clear()
                wall, used = timed(lambda c=codecs, r=run: r(c), args.calls, threads)
                sizes = codecs.gpu_jpeg.batch_sizes if codecs.gpu_jpeg is not None else [1]
                rows.append(
                    {
                        "op": op,
                        "threads": threads,
                        "codec": name,
                        "wall_ms_per_mp": 1000 * wall / (args.calls * mp),
                        "host_cpu_ms_per_mp": 1000 * used / (args.calls * mp),
                        "images_per_codec_call": sum(sizes) / max(1, len(sizes)),  # batched across threads
                    }
                )
                print(rows[-1], flush=True)
    ref, got = decode(upload, max_pixels=10**9, codecs=cpu).pixels, decode(upload, max_pixels=10**9, codecs=gpu).pixels
    diff = np.abs(ref.astype(int) - got.astype(int))
    report = {"rows": rows, "decode_diff": {"max": int(diff.max()), "mean": float(diff.mean())}}
    print(report["decode_diff"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
