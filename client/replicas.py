"""Choosing a replica (fewest outstanding requests first) and how long to back off."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

#: Statuses that a later try may turn into a success.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Replica:
    url: str
    outstanding: int = 0
    down_until: float = 0.0  # monotonic time before which a failed replica is avoided
    sent: int = 0


class Replicas:
    """The servers to spread requests over."""

    def __init__(self, urls: list[str], cooldown_s: float = 5.0) -> None:
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.cooldown_s = cooldown_s
        self._turn = 0

    def pick(self, avoid: set[str] | None = None, now: float | None = None) -> Replica:
        """Fewest outstanding among the healthy replicas not in ``avoid`` (falling back step by step)."""
        now = time.monotonic() if now is None else now
        avoid = avoid or set()
        pools = (
            [r for r in self.replicas if r.url not in avoid and r.down_until <= now],
            [r for r in self.replicas if r.down_until <= now],
            [r for r in self.replicas if r.url not in avoid],
            self.replicas,
        )
        candidates = next(p for p in pools if p)
        self._turn += 1
        n = len(candidates)
        # Rotate the start so equal loads take turns instead of all going to the first.
        ordered = [candidates[(self._turn + i) % n] for i in range(n)]
        return min(ordered, key=lambda r: r.outstanding)

    def mark_down(self, replica: Replica, now: float | None = None) -> None:
        replica.down_until = (time.monotonic() if now is None else now) + self.cooldown_s


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(
    attempt: int,
    *,
    base: float = 0.25,
    cap: float = 30.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter; never shorter than the server's ``Retry-After``."""
    rng = rng or random
    delay = min(cap, base * 2**attempt) * rng.uniform(0.5, 1.5)
    return max(delay, retry_after) if retry_after is not None else delay
