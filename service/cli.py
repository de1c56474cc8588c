"""`srserve`: run the HTTP service, or upscale one file locally."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from models.allocator import keep_large_allocations
from models.catalog import DEFAULT_WEIGHTS_DIR
from models.registry import UnknownModelError
from service.imageio import OUTPUT_FORMATS, ImageError, decode
from service.local import encode_result, run_route
from service.model_pool import ModelPool, RequestError

SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale one image file without a server")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path, help="its suffix picks the format unless --format is given")
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=float)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--format", choices=OUTPUT_FORMATS)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=100_000_000)


def upscale(args: argparse.Namespace) -> int:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    fmt = args.format or SUFFIX_FORMATS.get(args.output.suffix.lower())
    if fmt is None:
        print(
            f"srserve: cannot tell the format of {args.output}; use --format {'|'.join(OUTPUT_FORMATS)}",
            file=sys.stderr,
        )
        return 2
    try:
        pool = ModelPool(device=device, weights_dir=args.weights, enabled=[args.model])
        pool.load()
        image = decode(args.input.read_bytes(), max_pixels=args.max_pixels)
        route = pool.resolve(
            args.model, in_size=(image.height, image.width), scale=args.scale, width=args.width, height=args.height
        )
        pixels = run_route(pool, route, image.pixels)
        data = encode_result(image, pixels, route, fmt=fmt, quality=args.quality)
    except (OSError, ImageError, RequestError, UnknownModelError) as e:
        allowed = getattr(e, "allowed", None)
        print(f"srserve: {e}" + (f" (allowed: {allowed})" if allowed else ""), file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=args.output.parent, prefix=".srserve-", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, args.output)
    print(
        f"{args.input} {image.width}x{image.height} -> {args.output} {route.out_size[1]}x{route.out_size[0]} "
        f"({args.model}, {fmt})"
    )
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (settings from SR_* variables)")
    p.add_argument("--host", help="overrides SR_HOST")
    p.add_argument("--port", type=int, help="overrides SR_PORT")


def run_serve(args: argparse.Namespace) -> int:
    from service.server import serve
    from service.settings import Settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(Settings(**overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srserve", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    add_serve(sub)
    add_upscale(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_allocations()
    if args.command == "upscale":
        return upscale(args)
    if args.command in ("serve", None):  # plain `srserve` serves
        if args.command is None:
            args.host = args.port = None
        return run_serve(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
