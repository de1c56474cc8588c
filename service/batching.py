"""Dynamic batching: group queued tiles by shape and model, release a batch when
it is full, when its oldest tile has waited ``max_delay``, or at once when no
other request is on its way (waiting for company that cannot come only adds latency).
While the device is busy only a full batch goes; but when one goes, a partial group
that has waited ``max_delay`` and arrived before it goes first, so arrivals keep their order.

Within a group, higher priorities go first (rank 0 before rank 1); within a
priority the request with the fewest windows left goes first, and equal ones in
arrival order. So a photo uploaded behind a 50-megapixel scan is done in the
next batch instead of waiting for all of the scan's windows, and requests of
one size finish one after another (first come, first served) rather than all
late together, which keeps the admission's predicted wait honest.

``collect_batch`` is a pure function of its queue, backlog and clock, so it is
unit-tested with a plain ``queue.Queue`` and a fake clock.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Put on the source queue to stop: the backlog is flushed, then None is returned.
STOP = object()


class Message(Generic[T]):
    """One request's work for the collector: ``(key, item)`` pairs at one priority rank."""

    __slots__ = ("items", "rank")

    def __init__(self, items: Iterable[tuple[Hashable, T]], rank: int = 0) -> None:
        self.items = list(items)
        self.rank = rank


class _Group(Generic[T]):
    """Items of one key: per priority rank, a FIFO per owner (request); the owner with the fewest left first."""

    def __init__(self) -> None:
        self.ranks: dict[int, dict[Hashable, deque[tuple[float, T]]]] = {}
        self.size = 0

    def oldest(self) -> float:
        return min(q[0][0] for owners in self.ranks.values() for q in owners.values())

    def top_rank(self) -> int:
        return min(self.ranks)

    def add(self, owner: Hashable, item: T, now: float, rank: int) -> None:
        self.ranks.setdefault(rank, {}).setdefault(owner, deque()).append((now, item))
        self.size += 1

    def take(self, n: int) -> list[T]:
        out: list[T] = []
        for rank in sorted(self.ranks):
            owners = self.ranks[rank]
            while len(out) < n and owners:
                owner = min(owners, key=lambda o: len(owners[o]))  # ties: the earliest (dicts keep order)
                fifo = owners[owner]
                out.append(fifo.popleft()[1])
                if not fifo:
                    del owners[owner]
            if not owners:
                del self.ranks[rank]
            if len(out) == n:
                break
        self.size -= len(out)
        return out


class Backlog(Generic[T]):
    """Pending items in groups of equal key (one model, one tile shape).

    Args:
        limit: the largest batch for a key (default: ``max_items`` of :meth:`take`).
    """

    def __init__(self, limit: Callable[[Hashable], int] | None = None) -> None:
        self._groups: dict[Hashable, _Group[T]] = {}
        self._size = 0
        self._limit = limit
        self.stopping = False  # STOP seen: flush everything, then report the end

    def __len__(self) -> int:
        return self._size

    def add(self, key: Hashable, item: T, now: float, owner: Hashable | None = None, rank: int = 0) -> None:
        """Queue ``item``; items of one ``owner`` stay in order."""
        owner = owner if owner is not None else object()
        self._groups.setdefault(key, _Group()).add(owner, item, now, rank)
        self._size += 1

    def take(
        self, max_items: int, max_delay: float, now: float, flush: bool = False, hold: bool = False
    ) -> list[T] | float | None:
        """The next batch if one is due, else seconds until one will be (None when empty).

        Due: a group holds its batch limit, or its oldest item arrived
        ``max_delay`` ago, or ``flush``; with ``hold`` (the device is busy anyway) nothing until some
        group is full. Among due groups, the one holding the highest priority wins, then the one whose
        oldest item is oldest: so once a batch goes at all, a partial group that has waited its delay
        goes before a full one of later arrivals (held, it would be overtaken for as long as full
        batches keep coming, and the admission that expected it in arrival order be wrong by seconds).
        """
        due_key, due_rank, wait, full = None, None, None, False
        for key, group in self._groups.items():
            arrived = group.oldest()
            limit = self._limit(key) if self._limit else max_items
            if group.size >= limit or flush or now - arrived >= max_delay:
                full = full or group.size >= limit
                rank = (group.top_rank(), arrived)
                if due_rank is None or rank < due_rank:
                    due_key, due_rank = key, rank
            else:
                left = arrived + max_delay - now
                wait = left if wait is None else min(wait, left)
        if due_key is None or (hold and not full):
            return wait if due_key is None else 0.0
        group = self._groups[due_key]
        batch = group.take(self._limit(due_key) if self._limit else max_items)
        if not group.size:
            del self._groups[due_key]
        self._size -= len(batch)
        return batch

    def top_up(self, n: int, fits: Callable[[Hashable, int], bool]) -> list[T]:
        """Up to ``n`` items of the groups that ``fits(key, count)`` (oldest group first, each in its own
        order): what may join a batch that is not full (windows padded to a shared shape). ``fits`` is
        asked group by group, with how many would join, just before they are taken, so it may narrow as
        the batch grows."""
        out: list[T] = []
        for key in sorted(self._groups, key=lambda k: self._groups[k].oldest()):
            if len(out) >= n:
                break
            group = self._groups[key]
            if not fits(key, min(group.size, n - len(out))):
                continue
            out += group.take(n - len(out))
            if not group.size:
                del self._groups[key]
        self._size -= len(out)
        return out


def collect_batch(
    source: queue.Queue,
    backlog: Backlog[T],
    *,
    max_items: int,
    max_delay: float,
    clock: Callable[[], float] = time.monotonic,
    arriving: Callable[[], int] | None = None,
    block: bool = True,
    hold_until: float | None = None,
    until: float | None = None,
) -> list[T] | None:
    """Block until a batch is due and return it; None once ``STOP`` arrived and all is flushed.

    With ``block=False`` it returns ``[]`` at once when no batch is due yet (a
    worker with a batch still on the device asks this way before waiting for it).
    ``hold_until`` (with ``block=False``): the device is busy until about then, so a partial
    batch waits for company until that time at no cost; only a full one is released before,
    and ``[]`` comes back at that time if none is due.
    ``until`` (with ``block=True``): wait for a batch that is due only until then, else ``[]`` (a worker
    with a free lane and batches on the others waits for work or for the first of them, whichever comes).

    Each message on ``source`` is a :class:`Message` (one request's tiles), a
    plain iterable of ``(key, item)`` pairs (rank 0), or ``STOP``. Deadlines use
    ``clock`` (``time.monotonic``). ``arriving`` counts requests on their way
    (being read or decoded); while it is 0 nothing can join a partial batch, so
    it is released at once.
    """
    while True:
        idle = arriving is not None and arriving() == 0
        now = clock()
        holding = hold_until is not None and now < hold_until and not backlog.stopping
        ready = backlog.take(max_items, max_delay, now, flush=backlog.stopping or idle, hold=holding)
        if isinstance(ready, list):
            return ready
        if backlog.stopping and ready is None:
            return None
        try:
            if holding:  # wait for more work until the device is free, then ask once more without holding
                message = source.get(timeout=max(0.0, hold_until - now))  # type: ignore[operator]
            elif not block:
                message = source.get_nowait()
            elif until is not None:
                left = until - now
                if left <= 0:
                    return []
                message = source.get(timeout=left if ready is None else min(ready, left))
            else:
                message = source.get(timeout=ready)  # None: block until something arrives
        except queue.Empty:
            if holding:
                continue
            if not block:
                return []
            continue
        while True:
            if message is STOP:
                backlog.stopping = True
            else:
                now, owner = clock(), object()  # one message = one request
                rank = message.rank if isinstance(message, Message) else 0
                pairs = message.items if isinstance(message, Message) else message
                for key, item in pairs:  # type: ignore[union-attr]
                    backlog.add(key, item, now, owner, rank)
            try:
                message = source.get_nowait()
            except queue.Empty:
                break
