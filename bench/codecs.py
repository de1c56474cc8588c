"""The codec alone, in core-ms per megapixel: the Pillow path (before) against the fast codecs (after).

    python -m bench.codecs [--json out.json]

Each row runs the service's own ``imageio.encode`` / ``imageio.decode`` in this
process, one thread, on x2 outputs as the service writes them: nearest (what the
host-path bench serves) and bicubic (smooth, like a model's output) of photos
from ``../shared/datasets/sun_hays80`` (photo-like synthetic images when that is
absent). CPU time of the process (``time.process_time``), best of 3 per image,
median over images; encode per output megapixel, decode per decoded megapixel.
Sizes are bytes per pixel. "GIL" says whether two threads encode in about half the
time of one after the other (the encoder releases the GIL: it scales over cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from bench.load import make_image
from srserve.service.fast_codecs import Codecs
from srserve.service.imageio import decode, encode

DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sun_hays80"
PILLOW = None
FAST = Codecs(io_threads=2)  # this machine's default: fpng for small RGB PNGs
LIBPNG = Codecs(png_encoder="zlib")  # what many-core hosts and large outputs get


def photos(count: int) -> list[tuple[str, np.ndarray]]:
    if DATASET.is_dir():
        paths = sorted(DATASET.glob("*.jpg"))[:count]
        return [(p.stem[:16], np.asarray(Image.open(p).convert("RGB").resize((768, 576)))) for p in paths]
    return [(f"photo-like {i}", make_image(576, 768, i)) for i in range(count)]


def outputs(count: int) -> list[tuple[str, np.ndarray]]:
    out = []
    for name, src in photos(count):
        out.append((f"{name} nearest", src.repeat(2, 0).repeat(2, 1)))
        big = Image.fromarray(src).resize((src.shape[1] * 2, src.shape[0] * 2), Image.Resampling.BICUBIC)
        out.append((f"{name} bicubic", np.asarray(big)))
    return out


def core_ms(fn: Callable[[], object], repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return 1000 * best


def scales(fn: Callable[[], object], calls: int = 4) -> bool:
    """Two threads of ``calls`` each take well under twice one thread's: the GIL is released."""

    def many() -> None:
        for _ in range(calls):
            fn()

    start = time.perf_counter()
    many()
    many()
    serial = time.perf_counter() - start
    threads = [threading.Thread(target=many) for _ in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return serial / (time.perf_counter() - start) > 1.5


def encoder(fmt: str, codecs: Codecs | None) -> Callable[[np.ndarray], bytes]:
    return lambda p: encode(p, None, grey=False, fmt=fmt, quality=90, icc_profile=None, codecs=codecs)


def decoder(codecs: Codecs | None) -> Callable[[bytes], object]:
    return lambda data: decode(data, max_pixels=10**9, codecs=codecs)


def row(op: str, label: str, fn: Callable, inputs: list, mps: list[float], sizes: list[float] | None) -> dict:
    return {
        "op": op,
        "codec": label,
        "core_ms_per_mp": statistics.median(core_ms(partial(fn, x)) / mp for x, mp in zip(inputs, mps, strict=True)),
        "bytes_per_px": statistics.median(sizes) if sizes else None,
        "gil_free": scales(partial(fn, inputs[0])),
    }


def encode_rows(images: list[np.ndarray]) -> list[dict]:
    mps = [p.shape[0] * p.shape[1] / 1e6 for p in images]
    rows = []
    for fmt, label, codecs in [
        ("png", "Pillow (level 1, Z_RLE)", PILLOW),
        ("png", "fpng (auto's choice here)", FAST),
        ("png", "libpng via imagecodecs (Paeth, Z_RLE)", LIBPNG),
        ("jpeg", "Pillow (q90)", PILLOW),
        ("jpeg", "libjpeg-turbo via imagecodecs (q90)", FAST),
    ]:
        fn = encoder(fmt, codecs)
        sizes = [len(fn(p)) / (mp * 1e6) for p, mp in zip(images, mps, strict=True)]
        rows.append(row(f"{fmt} encode", label, fn, images, mps, sizes))
    return rows


def decode_rows(images: list[np.ndarray]) -> list[dict]:
    mps = [p.shape[0] * p.shape[1] / 1e6 for p in images]
    rows = []
    for fmt in ("png", "jpeg"):
        files = [encoder(fmt, PILLOW)(p) for p in images]
        for label, codecs in [("Pillow", PILLOW), ("libpng / libjpeg-turbo via imagecodecs", FAST)]:
            rows.append(row(f"{fmt} decode", label, decoder(codecs), files, mps, None))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| op | codec | core-ms / MP | bytes / px | GIL released |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        size = f"{r['bytes_per_px']:.2f}" if r["bytes_per_px"] is not None else ""
        lines.append(
            f"| {r['op']} | {r['codec']} | {r['core_ms_per_mp']:.1f} | {size} | {'yes' if r['gil_free'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.codecs", description=__doc__)
    p.add_argument("--images", type=int, default=4, help="photos (each as a nearest and a bicubic x2 output)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    named = outputs(args.images)
    images = [p for _, p in named]
    rows = encode_rows(images) + decode_rows(images)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"images": [n for n, _ in named], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
