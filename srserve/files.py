"""Writing output files the way ``cp`` would: whole or not at all, with the umask's mode."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, prefix: str = ".srserve-") -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader never sees a partial file. The temporary file is created with mode
    0666 filtered by the umask (``mkstemp`` would make it 0600), so the result
    has the mode any other tool would give it.
    """
    path = Path(path)
    while True:
        tmp = path.parent / f"{prefix}{secrets.token_hex(8)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:  # a 64-bit name collided: draw again
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
