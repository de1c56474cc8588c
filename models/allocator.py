"""Keep large CPU tensors' memory in the process between uses (glibc malloc).

By default glibc serves an allocation above a dynamic threshold (128 KiB at
first) with a fresh ``mmap`` and gives it back with ``munmap`` when freed. A
convolution's activations are such allocations, so every forward pass on a CPU
page-faults its working set in again: on the 2-core machine this project is
built on, ESPCN on a 256x256 image ran at ~10 images/s that way and ~20 with
the memory kept. PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for
the same reason; ``mallopt`` does it without preloading a library. Called by
the CLIs (process entry points own process-wide settings); a no-op where libc
is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("srserve.allocator")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (windows up to ~350 px keep their activations below it).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for the next batch instead of returned at once.
TRIM_THRESHOLD = 512 * 1024 * 1024


def keep_large_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds; True when they were set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.warning("mallopt refused the thresholds; CPU inference may page-fault more")
    return ok
