"""The admission's account of the device, as plain state driven by hand-made times."""

from __future__ import annotations

import math

import pytest

from srserve.service.admission import PROMISE_GRACE_S, Priority, QueueFull, WaitPredictor

NORMAL, LOW = Priority.NORMAL.rank, Priority.LOW.rank


def test_batches_faster_than_predicted_do_not_add_up_to_a_phantom_wait() -> None:
    """Predicted 0.3 s a batch, each really done in 0.25 s: under sustained load the
    device's predicted end is re-anchored on each real end, so the wait ahead of a
    new request stays one batch, not one batch plus 0.05 s for every batch so far."""
    waits = WaitPredictor(max_wait_s=1.0)
    now = 0.0
    for _ in range(40):
        cost = waits.started([(LOW, 0.3)], now, queue_empty=False)
        now += 0.25
        waits.finished(cost, now)
    waits.started([(LOW, 0.3)], now, queue_empty=False)
    assert waits.ahead(NORMAL, now + 0.1) == pytest.approx(0.2)
    assert waits.admit(NORMAL, 0.3, 0, now + 0.1, queue_empty=False).computed_s == pytest.approx(0.5)


def test_overlapped_batches_leave_what_is_still_on_the_device() -> None:
    """On CUDA the next batch launches before the last is awaited: when the first is
    done, the second's whole predicted time is still ahead, from that moment."""
    waits = WaitPredictor()
    first = waits.started([(NORMAL, 0.2)], 0.0, queue_empty=False)
    second = waits.started([(NORMAL, 0.3), (LOW, 0.1)], 0.01, queue_empty=True)
    assert waits.ahead(NORMAL, 0.01) == pytest.approx(0.59)
    waits.finished(first, 0.15)  # faster than its 0.2 s
    assert waits.ahead(NORMAL, 0.15) == pytest.approx(0.4)
    waits.finished(second, 0.5)
    assert waits.ahead(NORMAL, 0.5) == 0.0 and waits.ahead(LOW, 0.6) == 0.0


def test_refusal_names_the_limit_and_when_to_retry() -> None:
    waits = WaitPredictor(max_wait_s=1.0, min_retry_after_s=1.0)
    waits.queued(LOW, 0.9)
    with pytest.raises(QueueFull) as refused:
        waits.admit(LOW, 0.4, 0, 0.0, queue_empty=False)
    assert refused.value.reason == "queue_wait" and refused.value.retry_after >= 1.0
    assert waits.admit(NORMAL, 0.4, 0, 0.0, queue_empty=False).computed_s == pytest.approx(
        0.4
    )  # low work is not ahead of it
    assert waits.admit(LOW, 5.0, 0, 0.0, queue_empty=True).computed_s == pytest.approx(
        5.9
    )  # an empty queue admits anything


def test_retry_ledger_holds_early_resends_only() -> None:
    from srserve.service.retries import RetryLedger

    ledger = RetryLedger(capacity=2, max_hold_s=5.0)
    ledger.refused(1, 2.0, now=10.0)
    assert ledger.early(2, now=10.5) is None  # never refused: judged as new
    assert ledger.early(1, now=10.5) == pytest.approx(1.5)  # early: held for the rest of its Retry-After
    assert ledger.early(1, now=10.6) is None  # taken once: a second early resend is judged as new
    ledger.refused(1, 2.0, now=10.0)
    assert ledger.early(1, now=12.5) is None  # on time
    ledger.refused(1, 60.0, now=0.0)
    assert ledger.early(1, now=1.0) == 5.0  # a hold never passes max_hold_s
    for key in (1, 2, 3):
        ledger.refused(key, 2.0, now=0.0)
    assert len(ledger) == 2 and ledger.early(1, now=0.5) is None  # the oldest is forgotten first


def test_a_client_that_resends_early_is_demoted_for_a_while() -> None:
    from srserve.service.retries import PENALTY_S, RetryLedger

    ledger = RetryLedger()
    ledger.refused(1, 2.0, now=0.0)
    assert ledger.early(1, now=0.1, client=7) is not None
    assert ledger.demoted(7, now=1.0) and not ledger.demoted(8, now=1.0)
    assert not ledger.demoted(7, now=PENALTY_S + 0.2)  # forgiven after the penalty


def test_a_refused_request_keeps_its_promised_room_from_lower_priorities() -> None:
    """Normal work refused with Retry-After 1 s will come back then: until that (and the grace after),
    low-priority work is judged behind it, even into an empty queue; the normal request that comes
    back takes its promise, and an unkept promise lapses."""
    waits = WaitPredictor(max_wait_s=1.0, min_retry_after_s=1.0)
    waits.queued(NORMAL, 0.9)
    with pytest.raises(QueueFull) as refused:
        waits.admit(NORMAL, 0.8, 0, 0.0, queue_empty=False)
    assert math.ceil(refused.value.retry_after) == 1
    waits.started([(NORMAL, 0.9)], 0.0, queue_empty=True)
    waits.finished(0.9, 0.9)
    assert waits.idle and waits.ahead(NORMAL, 0.9) == 0.0
    assert waits.promised(LOW, 0.9) == pytest.approx(0.8)  # its own 0.8 s, promised at t = 1
    with pytest.raises(QueueFull):
        waits.admit(LOW, 0.6, 0, 0.9, queue_empty=True)
    waits.admit(NORMAL, 0.8, 0, 1.0, queue_empty=True)  # it came back
    assert waits.promised(LOW, 1.0) == 0.0

    # Refused at the gate (Engine.check_wait), its size unknown: the typical admitted request's counts.
    waits.promise(NORMAL, None, 2.0, 1.0)
    assert waits.promised(LOW, 3.5) == pytest.approx(0.8)
    assert waits.promised(LOW, 3.0 + PROMISE_GRACE_S + 0.01) == 0.0  # never came back: it lapses
    waits.admit(LOW, 0.6, 0, 3.0 + PROMISE_GRACE_S + 0.01, queue_empty=True)


def test_refusals_of_the_lowest_priority_promise_nothing() -> None:
    waits = WaitPredictor(max_wait_s=1.0)
    waits.queued(LOW, 2.0)
    with pytest.raises(QueueFull):
        waits.admit(LOW, 0.5, 0, 0.0, queue_empty=False)
    assert all(waits.promised(rank, 0.0) == 0.0 for rank in (NORMAL, LOW))
