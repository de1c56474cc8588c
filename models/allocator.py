"""Keep large CPU tensors' memory in the process between uses (glibc malloc).

By default glibc serves an allocation above a dynamic threshold (128 KiB at
first) with a fresh ``mmap`` and gives it back with ``munmap`` when freed. A
convolution's activations are such allocations, so every forward pass on a CPU
page-faults its working set in again: on the 2-core machine this project is
built on, ESPCN on a 256x256 image ran at ~10 images/s that way and ~20 with
the memory kept. PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for
the same reason; ``mallopt`` does it without preloading a library.

The trim threshold holds for the main arena only. Threads other than the first
get arenas of their own, built of 64 MiB heaps that glibc unmaps the moment one
is empty unless the arena's top pad would keep it: under 16 clients the server's
compute threads mapped and unmapped 39 such heaps in 64 requests (strace), 2,000-8,000
page faults an image, at random from one start to the next. A top pad of one
heap keeps them (``M_TOP_PAD``; it is also what each growth of a heap asks for
beyond the request, as address space, not memory): 0-6 faults an image. One shared
arena (``M_ARENA_MAX`` 1) also ended the faults but cost the host path 5% (nearest
x2 at 256x256: 241-256 against 258-263 images/s, alternating) for ~250 MB less
resident memory.

Called by the CLIs, first (process entry points own process-wide settings); a
no-op where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("srserve.allocator")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_TOP_PAD = -2
#: glibc's largest mmap threshold on 64-bit systems (windows up to ~350 px keep their activations below it).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for the next batch instead of returned at once.
TRIM_THRESHOLD = 512 * 1024 * 1024
#: One thread-arena heap (glibc's HEAP_MAX_SIZE on 64-bit): an emptied heap of a thread's arena is kept.
TOP_PAD = 64 * 1024 * 1024


def keep_large_allocations() -> bool:
    """Raise glibc's mmap and trim thresholds and its top pad; True when they were set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    ok = all(mallopt(option, value) for option, value in settings)
    if not ok:
        log.warning("mallopt refused the thresholds; CPU inference may page-fault more")
    return ok
