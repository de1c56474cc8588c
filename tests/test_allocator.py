"""The allocator setting the CLIs apply: large buffers stay in the process instead of
being page-faulted in again on every forward pass, in the main thread and in others."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = """
import resource, sys, threading
import numpy as np
from srserve.models.allocator import keep_large_allocations
if sys.argv[1] == "tuned":
    assert keep_large_allocations()
live = int(sys.argv[3])
counted = []

def passes():
    def one():
        buffers = [np.ones(16 << 20, np.uint8) for _ in range(live)]  # 16 MiB: one activation of a 256x256 window
        del buffers

    one()  # first use: these pages must come in once either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        one()
    counted.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

if sys.argv[2] == "thread":  # as the server's lanes run: a thread of their own
    t = threading.Thread(target=passes)
    t.start()
    t.join()
else:
    passes()
print(counted[0])
"""


def page_faults(mode: str, where: str, live: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, where, str(live)], cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.parametrize(
    ("where", "live"),
    [
        ("main", 1),
        # 64 MiB live at once: over one heap of a thread's own arena, which glibc unmaps when it empties
        # (whatever the trim threshold) unless the arena's top pad keeps it.
        ("thread", 4),
    ],
)
def test_large_buffers_are_reused_without_page_faults(where: str, live: int) -> None:
    default, tuned = page_faults("default", where, live), page_faults("tuned", where, live)
    # Mapped afresh each time: 4096 faults per buffer, or 8 with transparent huge pages.
    assert default >= 50
    assert tuned <= default // 20
