"""`sreval`: the published-table protocol on a folder of HR images.

Prints Y-channel PSNR/SSIM for Pillow bicubic and the chosen models at each
scale; ``--compare DIR`` writes side-by-side crops (bicubic | model | ground truth).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from srserve.models import MODELS
from srserve.models.allocator import keep_large_allocations
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.models.device import DEVICE_HELP, resolve_device
from srserve.models.evaluation import restoration
from srserve.models.evaluation.protocol import Upscaler, list_images, mean, pair, pil_bicubic, score
from srserve.models.imageops import upscale_array
from srserve.models.training.data import VAL_COUNT, load_hr, split
from srserve.models.training.degrade import TASKS
from srserve.models.weights import WeightsError

BASELINE = "bicubic(PIL)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sreval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folder", type=Path, nargs="?", default=Path("../shared/datasets/set5"), help="HR images")
    p.add_argument("--models", nargs="+", default=MODELS.names("learned"), help="registry names to evaluate")
    p.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument(
        "--held-out",
        action="store_true",
        help="only the images srtrain holds out of FOLDER for validation (its fixed split)",
    )
    p.add_argument("--val-count", type=int, default=VAL_COUNT, help="--held-out: how many (srtrain's --val-count)")
    p.add_argument(
        "--downscale",
        type=int,
        default=1,
        help="box-average each image N times smaller first, as srtrain --data-downscale does",
    )
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="folder of weights + cards")
    p.add_argument("--compare", type=Path, help="write bicubic | model | ground-truth crops here")
    p.add_argument("--crop", type=int, default=192, help="side of the comparison crops (HR px)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--task", choices=sorted(TASKS), help="evaluate an x1 restoration model instead of upscalers")
    p.add_argument("--quality", type=int, default=20, help="--task dejpeg: the JPEG quality of the inputs")
    p.add_argument("--sigma", type=float, default=25.0, help="--task denoise: the noise sigma (8-bit units)")
    return p


def side_by_side(panels: list[np.ndarray], crop: int, gap: int = 4) -> Image.Image:
    """Centre crops of equally sized images, left to right, on a white background."""
    h, w = panels[0].shape[:2]
    c = min(crop, h, w)
    y, x = (h - c) // 2, (w - c) // 2
    canvas = Image.new("RGB", (len(panels) * c + (len(panels) - 1) * gap, c), "white")
    for i, p in enumerate(panels):
        canvas.paste(Image.fromarray(p[y : y + c, x : x + c]), (i * (c + gap), 0))
    return canvas


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_allocations()
    try:
        device = resolve_device(args.device)
        if args.downscale < 1:
            raise ValueError(f"--downscale must be at least 1, got {args.downscale}")
        files = split(args.folder, args.val_count)[1] if args.held_out else list_images(args.folder)
        images = [(f.name, load_hr(f, args.downscale)) for f in files]
    except (FileNotFoundError, ValueError) as e:
        print(f"sreval: {e}", file=sys.stderr)
        return 2
    if args.held_out or args.downscale > 1:
        held = f"the {len(images)} images srtrain holds out" if args.held_out else f"{len(images)} images"
        shrunk = f", box-averaged {args.downscale}x smaller" if args.downscale > 1 else ""
        print(f"{args.folder.name}: {held}{shrunk}")
    if args.task is not None:
        level = args.quality if args.task == "dejpeg" else args.sigma
        arrays = [(name, np.asarray(image)) for name, image in images]
        return restoration.evaluate(
            args.task, level, arrays, args.weights, device, args.compare, args.crop, side_by_side
        )
    methods: dict[str, dict[int, Upscaler]] = {BASELINE: {s: pil_bicubic for s in args.scales}}
    for name in args.models:
        methods[name] = {}
        for s in args.scales:
            try:
                model, _ = get_upsampler(name, s, weights_dir=args.weights, device=device)
            except (KeyError, ValueError, WeightsError) as e:
                print(f"sreval: skipping {name} x{s}: {e}", file=sys.stderr)
                continue
            methods[name][s] = lambda lr, _s, m=model: upscale_array(m, lr, device)

    width = max(len(m) for m in methods)
    print(f"{args.folder.name}: {len(images)} images, Y-channel PSNR (dB) / SSIM")
    print(f"{'method':<{width}}  " + "  ".join(f"{'x' + str(s):^16}" for s in args.scales))
    for name, by_scale in methods.items():
        cells = []
        for s in args.scales:
            if s in by_scale:
                ps, ss = mean(score(by_scale[s], images, s))
                cells.append(f"{f'{ps:6.2f} / {ss:.4f}':^16}")
            else:
                cells.append(f"{'-':^16}")
        print(f"{name:<{width}}  " + "  ".join(cells))

    if args.compare:
        args.compare.mkdir(parents=True, exist_ok=True)
        for name, by_scale in methods.items():
            if name == BASELINE:
                continue
            for s, upscale in by_scale.items():
                for image_name, image in images:
                    lr, hr = pair(image, s)
                    panels = [pil_bicubic(lr, s), upscale(lr, s), hr]
                    out = args.compare / f"{Path(image_name).stem}_{name}_x{s}.png"
                    side_by_side(panels, args.crop).save(out)
        print(f"comparison crops (bicubic | model | ground truth) in {args.compare}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
