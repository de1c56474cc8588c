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
judged like any request but at low priority, and so is every upload of that
client for :data:`PENALTY_S`: a client that waits as asked is served first. A
resend on time is judged as new. Fingerprints collide only for identical uploads
from one address, and then cost a hold, never a refusal.

:class:`RetryLedger` is plain state with no clock of its own: callers pass times.
"""

from __future__ import annotations

from collections import OrderedDict

from starlette.types import Scope

#: Fingerprints remembered; the oldest are forgotten first (a bound on memory, not a limit on clients).
CAPACITY = 8192
#: Longest hold of one early resend: beyond this it is judged (and likely refused again) at once.
MAX_HOLD_S = 10.0
#: A client that resent early has all its uploads judged at low priority for this long (Fail at Scale's
#: advice: the well-behaved must not pay for the rest). Behind one address, so are its neighbours':
#: demoted, never refused for it.
PENALTY_S = 30.0
#: Early resends held at one time; beyond this they are judged at once (a bound on open connections).
MAX_HELD = 1024


def _sender(scope: Scope, headers: dict[bytes, bytes]) -> tuple[object, ...]:
    client = scope.get("client")
    address = client[0] if client else ""
    return (address, headers.get(b"x-api-key", b""), headers.get(b"authorization", b""), scope.get("query_string"))


def client_of(scope: Scope) -> int:
    """Who sent it and what kind of upload, as far as the server can tell: address, credentials and query.

    The query is in it so that one address's batch job that resends early (``priority=low``, say) does
    not demote the interactive uploads from behind the same address (a NAT, a proxy).
    """
    return hash(_sender(scope, dict(scope.get("headers") or [])))


def fingerprint(scope: Scope) -> int:
    """What identifies a resend of the same upload before its body is read (a hash: bounded memory)."""
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length", b"")
    kind = headers.get(b"content-type", b"").split(b";")[0]  # not the multipart boundary: new every send
    return hash((*_sender(scope, headers), length, kind))


class RetryLedger:
    """When each recently refused fingerprint may be judged again."""

    def __init__(self, capacity: int = CAPACITY, max_hold_s: float = MAX_HOLD_S, max_held: int = MAX_HELD) -> None:
        self.capacity = capacity
        self.max_hold_s = max_hold_s
        self.max_held = max_held
        self._not_before: OrderedDict[int, float] = OrderedDict()
        self._penalised: OrderedDict[int, float] = OrderedDict()  # client -> until when it is demoted
        self.held = 0  # early resends asleep now

    def __len__(self) -> int:
        return len(self._not_before)

    def refused(self, key: int, retry_after_s: float, now: float) -> None:
        """``key`` was refused at ``now`` with ``Retry-After: retry_after_s``."""
        self._not_before[key] = now + retry_after_s
        self._not_before.move_to_end(key)
        while len(self._not_before) > self.capacity:
            self._not_before.popitem(last=False)

    def early(self, key: int, now: float, client: int | None = None) -> float | None:
        """Seconds to hold ``key`` when it is an early resend (None: judge it as new).

        Its entry is taken: once held, the resend is judged like any request, and a
        refusal of it writes a new one. ``client`` (from :func:`client_of`) is penalised
        for the early resend (see :meth:`demoted`).
        """
        not_before = self._not_before.pop(key, None)
        if not_before is None or not_before <= now:
            return None
        if client is not None:
            self._penalised[client] = now + PENALTY_S
            self._penalised.move_to_end(client)
            while len(self._penalised) > self.capacity:
                self._penalised.popitem(last=False)
        return min(not_before - now, self.max_hold_s) if self.held < self.max_held else 0.0

    def demoted(self, client: int, now: float) -> bool:
        """Whether ``client`` resent early within the last :data:`PENALTY_S`: its uploads go at low priority."""
        until = self._penalised.get(client)
        if until is None:
            return False
        if until <= now:
            del self._penalised[client]
            return False
        return True
