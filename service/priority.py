"""Thread priority: compute and codec threads yield the cores to the event loop.

On a loaded host the event loop's work is short (accepting, parsing, refusing,
sending) but it waits behind every busy compute and codec thread. A higher nice
value on those threads (Linux: nice is per thread) lets the scheduler run the loop
first, so a refusal or a health check is answered in milliseconds while batches run;
when the loop is idle they still get every cycle. Threads they start (torch's OpenMP
team) inherit it.

The cores are half of it; the GIL is the other. Compute threads release and retake it
around every torch op, and a thread that wants it back after a system call (the event
loop after each send or receive) waits up to the interpreter's switch interval (5 ms by
default) while they keep taking it: the convoy effect. With batches side by side on two
lanes, a refusal's p99 went from 27 to 80 ms; a 0.5 ms interval brings it to 10 ms.
"""

from __future__ import annotations

import logging
import os
import sys
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


def shorten_gil_turns(ms: float) -> None:
    """Let a thread waiting for the GIL force a switch after ``ms`` (process-wide; the server's own process)."""
    sys.setswitchinterval(ms / 1000)
