"""`srtrain`: train a registered learned model at one scale and write its weights + card."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from srserve.models import MODELS
from srserve.models.allocator import keep_large_allocations
from srserve.models.device import DEVICE_HELP, resolve_device
from srserve.models.evaluation.protocol import list_images, load_rgb, mean, score
from srserve.models.imageops import upscale_array
from srserve.models.training.checkpoint import init_from
from srserve.models.training.data import VAL_COUNT, load_pairs, split
from srserve.models.training.degrade import TASKS, Degradation
from srserve.models.training.restoration import cpu_seconds_per_megapixel, evaluate, restoration_task
from srserve.models.training.trainer import LOSSES, Recipe, sr_task, train
from srserve.models.weights import save_weights, sha256_file, weights_stem

DEFAULT_DATA = Path("../shared/datasets/sun_hays80")
DEFAULT_EVAL = Path("../shared/datasets/set5")
RECIPE_ARGS = ("steps", "batch", "patch", "lr", "min_lr", "warmup", "loss", "seed", "val_every")


def parse_arch_args(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs with JSON values (``features=64``, ``residual=false``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--arch expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain", description=__doc__)
    p.add_argument("model", choices=MODELS.names("learned"), help="registered learned model")
    p.add_argument("--scale", type=int, help="upscale factor (x1 restoration models: 1, the default)")
    p.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE", help="architecture keyword arguments")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of HR training images")
    p.add_argument("--val-count", type=int, default=VAL_COUNT, help="images held out for validation")
    p.add_argument(
        "--data-downscale",
        type=int,
        default=1,
        metavar="N",
        help="box-average every training and validation image N times smaller first (JPEG sources: fewer artifacts)",
    )
    p.add_argument(
        "--data-rescale",
        type=float,
        nargs="+",
        default=[],
        metavar="F",
        help="also train on a copy of every training image resized by each factor F in (0, 1), after"
        " --data-downscale (scale augmentation); validation stays as it is",
    )
    p.add_argument(
        "--eval-dir",
        type=Path,
        default=DEFAULT_EVAL,
        help="benchmark set measured once at the end for the card (skipped if absent)",
    )
    p.add_argument("--out", type=Path, default=Path("weights"), help="folder for <model>_x<scale>.safetensors + .json")
    p.add_argument("--run-dir", type=Path, help="checkpoints (default runs/<model>_x<scale>)")
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/last.safetensors")
    p.add_argument("--init-from", type=Path, help="start from matching tensors of a weights file")
    p.add_argument(
        "--grow",
        action="store_true",
        help="with --init-from: embed a narrower model's weights in this wider one (for deconv, also a"
        " shallower one's in this deeper one), computing the same output",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    p.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    defaults = Recipe()
    for name in RECIPE_ARGS:
        value = getattr(defaults, name)
        choices = sorted(LOSSES) if name == "loss" else None
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, choices=choices)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_allocations()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"srtrain: {e}", file=sys.stderr)
        return 2
    task = MODELS.get(args.model).task
    if args.scale is None:
        if task == "upscale":
            print("srtrain: give --scale for an upscaler", file=sys.stderr)
            return 2
        args.scale = 1
    kwargs = {**parse_arch_args(args.arch), "scale": args.scale}
    torch.manual_seed(args.seed)  # the initial weights come from the global generator
    try:
        model = MODELS.build(args.model, **kwargs)
    except (TypeError, ValueError) as e:
        print(f"srtrain: {e}", file=sys.stderr)
        return 2
    recipe = Recipe(**{k: getattr(args, k) for k in RECIPE_ARGS})
    if args.grow and not args.init_from:
        print("srtrain: --grow needs --init-from", file=sys.stderr)
        return 2
    if args.init_from:
        try:
            copied = init_from(args.init_from, model, grow=args.grow)
        except ValueError as e:
            print(f"srtrain: --grow: {e}", file=sys.stderr)
            return 2
        recipe.extra["init_from"] = {
            "file": args.init_from.name,
            "sha256": sha256_file(args.init_from),
            "tensors": len(copied),
            **({"grown": True} if args.grow else {}),
        }
    if args.data_downscale < 1:
        print("srtrain: --data-downscale must be at least 1", file=sys.stderr)
        return 2
    if args.data_downscale > 1:
        recipe.extra["data_downscale"] = args.data_downscale
    rescales = tuple(args.data_rescale)
    if any(not 0 < f < 1 for f in rescales):
        print("srtrain: --data-rescale takes factors in (0, 1)", file=sys.stderr)
        return 2
    if rescales:
        recipe.extra["data_rescale"] = list(rescales)
    run_dir = args.run_dir or Path("runs") / weights_stem(args.model, args.scale)

    train_files, val_files = split(args.data, args.val_count)
    if task == "upscale":
        shrink = args.data_downscale
        train_set = load_pairs(train_files, args.scale, shrink, rescales)
        val_set = load_pairs(val_files, args.scale, shrink)
        make_sampler, validate_model = sr_task(train_set, val_set, args.scale, device, recipe)
    else:
        make_sampler, validate_model = restoration_task(
            TASKS[task], train_files, val_files, device, recipe, args.data_downscale, rescales
        )
    command = "srtrain " + shlex.join(argv if argv is not None else sys.argv[1:])
    summary = train(
        model,
        make_sampler=make_sampler,
        validate_model=validate_model,
        recipe=recipe,
        run_dir=run_dir,
        device=device,
        resume=args.resume,
        show_progress=not args.quiet,
        command=command,
    )

    best = load_file(str(run_dir / "best.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in best.items() if k.startswith("model.")})
    model.eval()
    val_names = [f.name for f in val_files]
    if task != "upscale":
        metrics = restoration_metrics(model, TASKS[task], summary, val_names, args.eval_dir, device)
    else:
        metrics = sr_metrics(model, summary, val_names, args.eval_dir, args.scale, device)
    card = {
        "architecture": args.model,
        "task": task,
        "kwargs": kwargs,
        "scale": args.scale,
        "receptive_radius": int(model.receptive_radius),
        "training": {
            "data": {
                "folder": args.data.name,
                "train_images": len(train_files),
                "validation_images": len(val_files),
                **({"degradation": asdict(TASKS[task])} if task != "upscale" else {}),
            },
            "recipe": summary["recipe"],
            "steps_run": summary["step"],
            "selected_step": summary["best_step"],
            "wall_time_s": round(summary["wall_s"], 1),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "command": command,
            "history": summary["history"],
        },
        "metrics": metrics,
    }
    if task != "upscale":
        card["cpu_seconds_per_megapixel"] = cpu_seconds_per_megapixel(model)
    out = args.out / f"{weights_stem(args.model, args.scale)}.safetensors"
    card = save_weights(model.cpu(), out, card)
    print(json.dumps({"weights": str(out), "parameters": card["parameters"], "metrics": metrics}, indent=2))
    return 0


def restoration_metrics(
    model: nn.Module,
    degradation: Degradation,
    summary: dict[str, Any],
    val_names: list[str],
    eval_dir: Path,
    device: torch.device,
) -> dict[str, Any]:
    level = degradation.eval_level
    metrics: dict[str, Any] = {
        "validation": {
            "images": val_names,
            "level": level,
            "psnr_rgb": round(summary["best_psnr"], 3),
            "ssim_rgb": round(summary["best_ssim"], 4),
            "step": summary["best_step"],
        },
    }
    if eval_dir.is_dir():
        metrics[eval_dir.name] = evaluate(model, degradation, eval_dir, device)
    return metrics


def sr_metrics(
    model: nn.Module, summary: dict[str, Any], val_names: list[str], eval_dir: Path, scale: int, device: torch.device
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "validation": {
            "images": val_names,
            "psnr_y": round(summary["best_psnr"], 3),
            "ssim_y": round(summary["best_ssim"], 4),
            "step": summary["best_step"],
        },
    }
    if eval_dir.is_dir():
        images = [(f.name, load_rgb(f)) for f in list_images(eval_dir)]
        scores = score(lambda lr, _s: upscale_array(model, lr, device), images, scale)
        ps, ss = mean(scores)
        metrics[eval_dir.name] = {
            "psnr_y": round(ps, 3),
            "ssim_y": round(ss, 4),
            "per_image": {s.image: round(s.psnr, 3) for s in scores},
            "protocol": "modcrop, Pillow bicubic LR, Y (BT.601 studio range), shave scale px",
        }
    return metrics


if __name__ == "__main__":
    raise SystemExit(main())
