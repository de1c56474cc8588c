"""Which files to send and where each result goes, never outside ``--out``.

Inputs are files, folders (walked recursively) or glob patterns. A folder's
tree is mirrored under the output folder; a glob mirrors the tree below its
first wildcard-free directory; a plain file lands at the top. The suffix
becomes the output format's; when two inputs would collide (``a.jpg`` and
``a.png``), both keep their old suffix in front (``a.jpg.png``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
FORMAT_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
TEMP_PREFIX = ".srbatch-"


class UnsafePath(ValueError):
    """An output would land outside the output folder."""


@dataclass(frozen=True)
class Task:
    source: Path
    relative: PurePath  # the output's path below --out
    output: Path


def display(path: os.PathLike | str) -> str:
    """A printable form of any path, also one whose name is not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):  # does not follow symlinked folders
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(TEMP_PREFIX) and path.is_file():
                found.append(path)
    return found


def _glob_base(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def discover(inputs: list[str]) -> list[tuple[Path, PurePath]]:
    """(source file, its path relative to its input root) for every image the inputs name."""
    out: list[tuple[Path, PurePath]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += [(f, f.relative_to(path)) for f in _walk(path)]
        elif path.is_file():
            out.append((path, PurePath(path.name)))
        elif glob.has_magic(item):
            base = _glob_base(item)
            for match in sorted(glob.glob(item, recursive=True)):
                m = Path(match)
                if m.is_dir():
                    out += [(f, f.relative_to(base)) for f in _walk(m)]
                elif m.is_file() and m.suffix.lower() in IMAGE_SUFFIXES:
                    out.append((m, m.relative_to(base)))
        else:
            raise FileNotFoundError(f"no such file, folder or matching pattern: {display(item)}")
    seen: set[Path] = set()
    unique = []
    for source, rel in out:
        key = source.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((source, rel))
    return unique


def plan_outputs(found: list[tuple[Path, PurePath]], out_dir: Path, fmt: str) -> list[Task]:
    """Map each input to its output path below ``out_dir``; refuse anything that escapes it."""
    suffix = FORMAT_SUFFIX[fmt]
    wanted: dict[PurePath, int] = {}
    for _, rel in found:
        target = rel.with_suffix(suffix)
        wanted[target] = wanted.get(target, 0) + 1
    tasks = []
    for source, rel in found:
        target = rel.with_suffix(suffix)
        if wanted[target] > 1:
            target = rel.with_name(rel.name + suffix)
        tasks.append(Task(source, target, out_dir / target))
    return tasks


def check_inside(output: Path, out_dir: Path) -> None:
    """Raise :class:`UnsafePath` if ``output`` (following symlinks so far) leaves ``out_dir``."""
    root = out_dir.resolve()
    if any(part == ".." for part in PurePath(os.path.relpath(output, out_dir)).parts):
        raise UnsafePath(f"{display(output)} is outside {display(out_dir)}")
    resolved = output.parent.resolve() / output.name
    if output.is_symlink():
        resolved = output.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePath(f"{display(output)} resolves to {display(resolved)}, outside {display(root)}")
