"""Refused requests that come back before their ``Retry-After``: held, then judged at low priority.

A client that resends a refused upload at once, ignoring ``Retry-After``, would
otherwise be judged again and refused again, many times a second: each refusal
costs the server a little, the storm of them costs the clients that do wait
their share, and under a closed loop nothing is gained (the client is back in
a millisecond). Google's SRE book ("Handling Overload") has clients back off;
this is the server's side of that bargain for the clients that do not.

A resend is recognised by a fingerprint of what the server sees before reading
the body (client address, API key, query and length: :func:`fingerprint`). An
early resend is held asleep (no CPU) until its ``Retry-After`` has passed, then
judged like any request but at low priority: a client that waited as asked is
served first. A resend on time is judged as new. Fingerprints collide only for
identical uploads from one address, and then costs a hold, never a refusal.

:class:`RetryLedger` is plain state with no clock of its own: callers pass times.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.types import Scope

#: Fingerprints remembered; the oldest are forgotten first (a bound on memory, not a limit on clients).
CAPACITY = 8192
#: Longest hold of one early resend: beyond this it is judged (and likely refused again) at once.
MAX_HOLD_S = 10.0
#: Early resends held at one time; beyond this they are judged at once (a bound on open connections).
MAX_HELD = 1024


def fingerprint(scope: Scope) -> int:
    """What identifies a resend of the same upload before its body is read (a hash: bounded memory)."""
    headers = dict(scope.get("headers") or [])
    client = scope.get("client")
    return hash(
        (
            client[0] if client else "",
            headers.get(b"x-api-key", b""),
            headers.get(b"authorization", b""),
            scope.get("query_string", b""),
            headers.get(b"content-length", b""),
            headers.get(b"content-type", b"").split(b";")[0],  # not the multipart boundary: new every send
        )
    )


class RetryLedger:
    """When each recently refused fingerprint may be judged again."""

    def __init__(self, capacity: int = CAPACITY, max_hold_s: float = MAX_HOLD_S, max_held: int = MAX_HELD) -> None:
        self.capacity = capacity
        self.max_hold_s = max_hold_s
        self.max_held = max_held
        self._not_before: OrderedDict[int, float] = OrderedDict()
        self.held = 0  # early resends asleep now

    def __len__(self) -> int:
        return len(self._not_before)

    def refused(self, key: int, retry_after_s: float, now: float) -> None:
        """``key`` was refused at ``now`` with ``Retry-After: retry_after_s``."""
        self._not_before[key] = now + retry_after_s
        self._not_before.move_to_end(key)
        while len(self._not_before) > self.capacity:
            self._not_before.popitem(last=False)

    def early(self, key: int, now: float) -> float | None:
        """Seconds to hold ``key`` when it is an early resend (None: judge it as new).

        Its entry is taken: once held, the resend is judged like any request, and a
        refusal of it writes a new one.
        """
        not_before = self._not_before.pop(key, None)
        if not_before is None or not_before <= now:
            return None
        return min(not_before - now, self.max_hold_s) if self.held < self.max_held else 0.0
