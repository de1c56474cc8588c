"""Thread priority: compute and codec threads yield the cores to the event loop.

On a loaded host the event loop's work is short (accepting, parsing, refusing,
sending) but it waits behind every busy compute and codec thread. A higher nice
value on those threads (Linux: nice is per thread) lets the scheduler run the loop
first, so a refusal or a health check is answered in milliseconds while batches run;
when the loop is idle they still get every cycle. Threads they start (torch's OpenMP
team) inherit it.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("srserve")


def lower_this_thread(by: int) -> None:
    """Set the calling thread's nice to the process's (its main thread's) plus ``by``.

    Absolute, not relative: a thread started by an already lowered one inherits its nice,
    and adding again would push it to the bottom. 0 leaves the thread as it is; never
    fails a caller.
    """
    if by <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + by)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as e:  # lowering needs no privilege, but a sandbox may still refuse it
        log.warning("could not lower the priority of %s: %s", threading.current_thread().name, e)
