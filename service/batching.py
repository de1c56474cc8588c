"""Dynamic batching: group queued tiles by shape and model, release a batch when
it is full or its oldest tile has waited ``max_delay``.

Within a group, requests take turns (one tile each, round-robin), so a photo
uploaded behind a 50-megapixel scan shares the next batch instead of waiting
for all of the scan's tiles.

``collect_batch`` is a pure function of its queue, backlog and clock, so it is
unit-tested with a plain ``queue.Queue`` and a fake clock.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Put on the source queue to stop: the backlog is flushed, then None is returned.
STOP = object()


class _Group(Generic[T]):
    """Items of one key: a FIFO per owner (request), owners served round-robin."""

    def __init__(self) -> None:
        self.owners: dict[Hashable, deque[tuple[float, T]]] = {}  # in turn order
        self.size = 0

    def oldest(self) -> float:
        return min(q[0][0] for q in self.owners.values())

    def add(self, owner: Hashable, item: T, now: float) -> None:
        self.owners.setdefault(owner, deque()).append((now, item))
        self.size += 1

    def take(self, n: int) -> list[T]:
        out: list[T] = []
        while len(out) < n and self.owners:
            owner = next(iter(self.owners))
            fifo = self.owners.pop(owner)
            out.append(fifo.popleft()[1])
            if fifo:
                self.owners[owner] = fifo  # to the back of the line
        self.size -= len(out)
        return out


class Backlog(Generic[T]):
    """Pending items in groups of equal key (one model, one tile shape)."""

    def __init__(self) -> None:
        self._groups: dict[Hashable, _Group[T]] = {}
        self._size = 0
        self.stopping = False  # STOP seen: flush everything, then report the end

    def __len__(self) -> int:
        return self._size

    def add(self, key: Hashable, item: T, now: float, owner: Hashable | None = None) -> None:
        """Queue ``item``; items of one ``owner`` stay in order, owners take turns."""
        self._groups.setdefault(key, _Group()).add(owner if owner is not None else object(), item, now)
        self._size += 1

    def take(self, max_items: int, max_delay: float, now: float, flush: bool = False) -> list[T] | float | None:
        """The next batch if one is due, else seconds until one will be (None when empty).

        Due: a group holds ``max_items``, or its oldest item arrived ``max_delay``
        ago (or ``flush``). Among due groups the one whose oldest item is oldest wins.
        """
        due_key, due_since, wait = None, None, None
        for key, group in self._groups.items():
            arrived = group.oldest()
            if flush or group.size >= max_items or now - arrived >= max_delay:
                if due_since is None or arrived < due_since:
                    due_key, due_since = key, arrived
            else:
                left = arrived + max_delay - now
                wait = left if wait is None else min(wait, left)
        if due_key is None:
            return wait
        group = self._groups[due_key]
        batch = group.take(max_items)
        if not group.size:
            del self._groups[due_key]
        self._size -= len(batch)
        return batch


def collect_batch(
    source: queue.Queue,
    backlog: Backlog[T],
    *,
    max_items: int,
    max_delay: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[T] | None:
    """Block until a batch is due and return it; None once ``STOP`` arrived and all is flushed.

    Each message on ``source`` is an iterable of ``(key, item)`` pairs (one
    request's tiles) or ``STOP``. Deadlines use ``clock`` (``time.monotonic``).
    """
    while True:
        ready = backlog.take(max_items, max_delay, clock(), flush=backlog.stopping)
        if isinstance(ready, list):
            return ready
        if backlog.stopping and ready is None:
            return None
        try:
            message = source.get(timeout=ready)  # None: block until something arrives
        except queue.Empty:
            continue
        while True:
            if message is STOP:
                backlog.stopping = True
            else:
                now, owner = clock(), object()  # one message = one request
                for key, item in message:  # type: ignore[union-attr]
                    backlog.add(key, item, now, owner)
            try:
                message = source.get_nowait()
            except queue.Empty:
                break
