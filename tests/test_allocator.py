"""The allocator setting the CLIs apply: large buffers stay in the process instead of
being page-faulted in again on every forward pass."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SCRIPT = """
import resource, sys
import numpy as np
from srserve.models.allocator import keep_large_allocations
if sys.argv[1] == "tuned":
    assert keep_large_allocations()
np.ones(16 << 20, np.uint8)  # first use: these pages must come in once either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(16 << 20, np.uint8)  # 16 MiB, like one activation of a 256x256 window
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_large_buffers_are_reused_without_page_faults() -> None:
    default, tuned = page_faults("default"), page_faults("tuned")
    # Mapped afresh each time: 4096 faults per buffer, or 8 with transparent huge pages.
    assert default >= 50
    assert tuned <= default // 20
