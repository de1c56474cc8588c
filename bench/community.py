"""Community models through the service against the same network alone on whole images, side by side.

    python -m bench.community [--rounds 2] [--json out.json]

Two spandrel architectures built here with random weights and saved as community files
(what a downloaded file is, to the server): an ESRGAN (RRDBNet, 2 blocks, 32 filters) and a
Real-ESRGAN Compact (SRVGGNet, 32 filters, 8 convolutions), both x2. espcn x2 (built in) runs
in the same rounds as the reference the issue compares with. For each, per round: the network
alone on whole 256x256 images one at a time (``predict``, no tiles, codec or HTTP), then
srserve (one server with ``SR_MODELS_DIR``) under closed loops of 1 and 16 clients uploading
PNGs. Numbers only; run it with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from bench.compare import model_alone
from bench.load import Target, closed_loop, images_for, png_bytes
from srserve.models.community import load_model_file
from srserve.service.inference import predict
from tests.server import running_server

SIZE = (256, 256)
REQUESTS = {1: 12, 16: 48}


def builders() -> dict[str, Callable[[], nn.Module]]:
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    return {
        "esrgan_2b32": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=32, num_blocks=2, scale=2),
        "compact_32x8": lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=32, num_conv=8, upscale=2),
    }


def net_alone(path: Path, images: list[np.ndarray], repeats: int = 2) -> float:
    """Images/s of the file's network on whole images, one at a time (best of ``repeats``)."""
    net = load_model_file(path).net
    cpu = torch.device("cpu")
    predict(net, images[0][None], device=cpu)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for im in images:
            predict(net, im[None], device=cpu)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows: dict[str, dict[int, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models"
        folder.mkdir()
        for name, build in builders().items():
            torch.manual_seed(0)
            save_file({k: v.contiguous() for k, v in build().state_dict().items()}, folder / f"{name}.safetensors")
        env = {"SR_MODELS_DIR": str(folder), "SR_MODELS": "espcn", "SR_MAX_QUEUE_WAIT_S": "600"}
        images = images_for([SIZE], 8)
        with running_server(Path(tmp), env, ready_timeout=600) as srv:
            for round_ in range(args.rounds):
                for name in ("espcn", *builders()):
                    if name == "espcn":
                        alone = model_alone("espcn", 2, images)
                    else:
                        alone = net_alone(folder / f"{name}.safetensors", images)
                    for clients, count in REQUESTS.items():
                        bodies = [png_bytes(im) for im in images_for([SIZE], count)]
                        target = Target("srserve", srv.url, "/v1/upscale", {"model": name, "scale": 2})
                        asyncio.run(closed_loop(target, bodies[: max(2, clients)], clients))  # warm-up
                        r = asyncio.run(closed_loop(target, bodies, clients)).summary()
                        r["model_alone_img_s"] = alone
                        r["over_model"] = r["throughput_img_s"] / alone
                        rows.setdefault(name, {}).setdefault(clients, []).append(r)
                        print(
                            f"round {round_ + 1} {name:13} c{clients:<3} {r['throughput_img_s']:6.2f} img/s "
                            f"(alone {alone:6.2f}) = {r['over_model']:.2f}  p50 {r['p50_ms']:6.0f} ms"
                            + (f"  errors {r['errors']}" if r["errors"] else ""),
                            flush=True,
                        )
    print("\n| model | clients | alone img/s | srserve img/s | srserve / alone (median of rounds) |")
    print("| --- | --- | --- | --- | --- |")
    for name, by_clients in rows.items():
        for clients, rounds in by_clients.items():
            med = float(np.median([r["over_model"] for r in rounds]))
            alone = float(np.median([r["model_alone_img_s"] for r in rounds]))
            served = float(np.median([r["throughput_img_s"] for r in rounds]))
            print(f"| {name} | {clients} | {alone:.2f} | {served:.2f} | {med:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"size": SIZE, "rounds": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
