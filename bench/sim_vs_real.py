"""The simulated accelerator's constants against the real device: does the H200 profile hold?

    python -m bench.sim_vs_real [--json out.json]      # on a CUDA machine (bench/device_check.sh runs it)

For ESPCN x2 on square windows of 64, 128, 256 and 512 px at batch sizes 1, 4 and 16,
fp32 and fp16: the batch's device time measured by CUDA events through the service's
own ``BatchRunner`` (uint8 in, upload, model, download) beside what
``bench/sim_accelerator.py`` predicts for it. Their ratio per point is what the next
profile's constants are fitted from (per-batch cost from the small windows, the FLOP
rate from the large ones).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from bench.sim_accelerator import PROFILES, SimulatedAccelerator
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service.batch_runner import BatchRunner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.sim_vs_real", description=__doc__)
    p.add_argument("--profile", default="h200", choices=sorted(PROFILES))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench.sim_vs_real needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    module, _ = get_upsampler("espcn", 2, weights_dir=DEFAULT_WEIGHTS_DIR, device=device)
    cpu_module, _ = get_upsampler("espcn", 2, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")
    runner, sim = BatchRunner(device), SimulatedAccelerator(PROFILES[args.profile])
    rows = []
    for precision in ("fp32", "fp16"):
        for side in (64, 128, 256, 512):
            for batch in (1, 4, 16):
                windows = np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
                times = []
                for _ in range(6):  # the first runs choose kernels
                    pending = runner.launch(module, windows, precision=precision)
                    pending.wait()
                    times.append(pending.device_s)
                    pending.release()
                real = statistics.median(times[2:])
                predicted = sim.seconds(cpu_module, windows, 4 * windows.nbytes, precision=precision)
                rows.append(
                    {"precision": precision, "side": side, "batch": batch, "real_s": real, "simulated_s": predicted}
                )
                print(
                    f"{precision} {side:4}px x{batch:<2} real {1e3 * real:8.3f} ms  simulated "
                    f"{1e3 * predicted:8.3f} ms  real/simulated {real / predicted:5.2f}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps({"profile": args.profile, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
