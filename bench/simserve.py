"""srserve on a simulated accelerator: the real server, its batches held for a GPU-shaped time.

    python -m bench.simserve --port 8000 --profile h200          # from the checkout
    python -m bench.simserve --profile h200 --exact             # the real models' pixels (costs host CPU)
    python -m bench.simserve --profile h200 --flops-scale 370   # as if the model were ESRGAN-class

Everything is the production server (HTTP, admission, planner, batching, codecs,
metrics) except the device: batches go to :mod:`bench.sim_accelerator`, which
answers nearest-neighbour pixels at once and holds each batch for the profile's
time. Any load generator can then drive it over HTTP. Other settings come from the
``SR_*`` environment as for ``srserve serve`` (``SR_DEVICE`` is forced to cpu:
the models' weights stay on the host, and nothing runs on a real device).

Bench and tests only: the service never imports ``bench``, so no production
setting can select this device.
"""

from __future__ import annotations

import argparse

from bench.sim_accelerator import PROFILES, SimulatedAccelerator
from srserve.models.allocator import keep_large_allocations
from srserve.service.server import serve
from srserve.service.settings import Settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench.simserve", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--port", type=int, help="overrides SR_PORT")
    p.add_argument("--host", help="overrides SR_HOST")
    p.add_argument("--profile", choices=sorted(PROFILES), default="h200")
    p.add_argument(
        "--exact",
        action="store_true",
        help="the real models' output, computed on the host CPU (warm-up's timings compute it too: start with a"
        " small SR_TILE_SIZE, such as 96)",
    )
    p.add_argument(
        "--flops-scale",
        type=float,
        default=1.0,
        help="charge this many times each model's FLOPs: a heavier network's stand-in (see bench/sim_accelerator.py)",
    )
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides, device="cpu")
    keep_large_allocations()  # as the srserve CLI does
    device = SimulatedAccelerator(PROFILES[args.profile], exact=args.exact, flops_scale=args.flops_scale)
    serve(settings, runner=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
