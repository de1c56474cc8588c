"""`srserve`: run the HTTP service, or upscale files and folders locally."""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import replace
from pathlib import Path

from srserve.client.cli import HelpFormatter
from srserve.client.inputs import FORMAT_SUFFIX, IMAGE_SUFFIXES, discover, display, plan_outputs
from srserve.files import write_atomic
from srserve.models import MODELS
from srserve.models.allocator import keep_large_allocations
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR
from srserve.models.device import DEVICE_HELP, resolve_device
from srserve.models.registry import UnknownModelError
from srserve.service.fast_codecs import Codecs
from srserve.service.imageio import OUTPUT_FORMATS, ImageError, decode, encode_result_into
from srserve.service.model_pool import ModelPool
from srserve.service.routing import RequestError, default_scale, resolve
from srserve.service.windows import run_route

SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale image files or folders without a server",
        description="Upscale INPUT to OUTPUT in this process, through the same windows the service plans. "
        "A file goes to a file (its suffix picks the format); a folder goes to a folder, its tree mirrored.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", type=Path, help="an image file, or a folder of them (walked recursively)")
    p.add_argument("output", type=Path, help="the output file, or the output folder for a folder")
    p.add_argument(
        "--model", default="espcn", help="registry name: espcn, deconv, dejpeg, denoise or a resizer such as bicubic"
    )
    p.add_argument("--scale", type=float, help="upscale factor (default: 2; 1 for restoration models)")
    p.add_argument("--restore", help="a restoration model (dejpeg, denoise) run on the image first")
    p.add_argument("--width", type=int, help="output width in px; with --height, resize to exactly that size")
    p.add_argument("--height", type=int, help="output height in px")
    p.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        help="output format (default: the output file's suffix; png for a folder)",
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG/WebP quality 1-100")
    p.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist as they are")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="folder of weights and their cards")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--max-pixels", type=int, default=100_000_000, help="largest input image, in pixels")


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path, str]]:
    """(input, output, format) for every image; raises ValueError for what cannot be done."""
    if args.input.is_dir():
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"{display(args.output)} is a file; a folder input needs an output folder")
        fmt = args.format or "png"
        found = discover([str(args.input)])
        if not found:
            raise ValueError(f"{display(args.input)} holds no images ({' '.join(sorted(IMAGE_SUFFIXES))})")
        return [(t.source, t.output, fmt) for t in plan_outputs(found, args.output, fmt)]
    if not args.input.is_file():
        raise ValueError(f"no such file or folder: {display(args.input)}")
    output = args.output
    if output.is_dir():
        output = output / args.input.with_suffix(FORMAT_SUFFIX[args.format or "png"]).name
    fmt = args.format or SUFFIX_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {display(output)}; use --format {'|'.join(OUTPUT_FORMATS)}")
    return [(args.input, output, fmt)]


def upscale(args: argparse.Namespace) -> int:
    try:
        device = resolve_device(args.device)
        jobs = _jobs(args)
    except ValueError as e:
        print(f"srserve: {e}", file=sys.stderr)
        return 2
    try:
        if args.restore is not None and MODELS.get(args.restore).task == "upscale":
            restorers = [n for n in MODELS.names("learned") if MODELS.get(n).task != "upscale"]
            raise ValueError(f"--restore {args.restore!r} is not a restoration model; those are {restorers}")
        names = [args.model] if args.restore in (None, args.model) else [args.model, args.restore]
        pool = ModelPool(device=device, weights_dir=args.weights, enabled=names)
        pool.load()
    except (OSError, ValueError, UnknownModelError) as e:
        print(f"srserve: {e}", file=sys.stderr)
        return 2
    scale = args.scale
    if scale is None and args.width is None and args.height is None:
        scale = default_scale(args.model)
    codecs = Codecs(io_threads=1)  # one file at a time, in this thread: fpng where it pays
    failed = 0
    for source, output, fmt in jobs:
        if args.skip_existing and output.exists():
            continue
        try:
            image = decode(source.read_bytes(), max_pixels=args.max_pixels, codecs=codecs)
            if args.restore is not None:  # as the service does: restored pixels straight into the model
                restored = resolve(pool, args.restore, in_size=(image.height, image.width), scale=1)
                image = replace(image, pixels=run_route(pool, restored, image.pixels))
            route = resolve(
                pool,
                args.model,
                in_size=(image.height, image.width),
                scale=default_scale(args.model)
                if args.scale is None and args.width is None and args.height is None
                else args.scale,
                width=args.width,
                height=args.height,
            )
            pixels = run_route(pool, route, image.pixels)
            data = io.BytesIO()
            encode_result_into(data, image, pixels, route.out_size, fmt=fmt, quality=args.quality, codecs=codecs)
            output.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(output, data.getvalue())
        except (OSError, ImageError, RequestError) as e:
            allowed = getattr(e, "allowed", None)
            print(f"srserve: {display(source)}: {e}" + (f" (allowed: {allowed})" if allowed else ""), file=sys.stderr)
            failed += 1
            continue
        print(
            f"{display(source)} {image.width}x{image.height} -> {display(output)} "
            f"{route.out_size[1]}x{route.out_size[0]} ({args.model}, {fmt})"
        )
    return 1 if failed else 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service (settings from SR_* variables)",
        description="Run the HTTP service. Every setting is an SR_* environment variable (see the README).",
    )
    p.add_argument("--host", help="overrides SR_HOST")
    p.add_argument("--port", type=int, help="overrides SR_PORT")
    p.add_argument("--models", type=Path, help="a folder of community .safetensors files; overrides SR_MODELS_DIR")


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a .pth model to .safetensors, offline",
        description="Convert a pickled model file (.pth/.pt/.ckpt) to .safetensors with a JSON card beside it. "
        "The pickle is read by spandrel's restricted unpickler: a file that would run code is refused. "
        "Needs srserve[community].",
    )
    p.add_argument("input", type=Path, help="the .pth (or .pt/.ckpt) file")
    p.add_argument("output", type=Path, help="the .safetensors file to write (its card goes to the same stem .json)")
    p.add_argument("--licence", help="the weights' licence, recorded in the card (e.g. CC-BY-NC-SA-4.0)")


def run_convert(args: argparse.Namespace) -> int:
    from srserve.models.community import CommunityModelError
    from srserve.models.community.convert import convert

    try:
        card = convert(args.input, args.output, licence=args.licence)
    except (CommunityModelError, OSError) as e:
        print(f"srserve: {e}", file=sys.stderr)
        return 1
    print(f"{display(args.output)}: {card['architecture']} x{card['scale']}, {card['parameters']} parameters")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from srserve.models.community import CommunityModelError
    from srserve.service.gpu_jpeg import GpuJpegUnavailable
    from srserve.service.server import serve
    from srserve.service.settings import Settings

    given = (("host", args.host), ("port", args.port), ("models_dir", args.models))
    overrides = {k: v for k, v in given if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        for error in e.errors():
            name = "SR_" + "_".join(str(p) for p in error["loc"]).upper() if error["loc"] else "settings"
            print(f"srserve: {name}: {error['msg']}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except (GpuJpegUnavailable, CommunityModelError) as e:
        print(f"srserve: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srserve", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    add_serve(sub)
    add_upscale(sub)
    add_convert(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_allocations()
    if args.command == "upscale":
        return upscale(args)
    if args.command == "convert":
        return run_convert(args)
    if args.command in ("serve", None):  # plain `srserve` serves
        if args.command is None:
            args.host = args.port = args.models = None
        return run_serve(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
