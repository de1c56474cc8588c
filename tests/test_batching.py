"""The batch collector, with a plain queue and a fake monotonic clock."""

from __future__ import annotations

import queue
import threading
import time

from srserve.service.batching import STOP, Backlog, Message, collect_batch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_full_batch_is_released_at_once() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("a", i) for i in range(5)])
    backlog: Backlog[int] = Backlog()
    clock = FakeClock()
    assert collect_batch(q, backlog, max_items=4, max_delay=10.0, clock=clock) == [0, 1, 2, 3]
    assert len(backlog) == 1


def test_partial_batch_waits_for_the_deadline() -> None:
    backlog: Backlog[str] = Backlog()
    backlog.add("k", "x", now=10.0)
    wait = backlog.take(4, max_delay=0.5, now=10.2)
    assert isinstance(wait, float) and abs(wait - 0.3) < 1e-9
    assert backlog.take(4, max_delay=0.5, now=10.5) == ["x"]
    assert backlog.take(4, max_delay=0.5, now=10.5) is None


def test_real_clock_deadline_releases_a_lone_item() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("k", 1)])
    assert collect_batch(q, Backlog(), max_items=8, max_delay=0.01) == [1]


def test_items_arriving_before_the_deadline_join_the_batch() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("k", 1)])
    timer = threading.Timer(0.02, lambda: q.put([("k", 2), ("k", 3)]))
    timer.start()
    assert collect_batch(q, Backlog(), max_items=8, max_delay=0.3) == [1, 2, 3]


def test_groups_never_mix_and_oldest_goes_first() -> None:
    backlog: Backlog[str] = Backlog()
    backlog.add(("espcn", (64, 64)), "a1", now=1.0)
    backlog.add(("bicubic", (64, 64)), "b1", now=0.5)
    backlog.add(("espcn", (64, 64)), "a2", now=1.1)
    backlog.add(("espcn", (32, 64)), "c1", now=1.2)
    assert backlog.take(8, max_delay=0.1, now=5.0) == ["b1"]
    assert backlog.take(8, max_delay=0.1, now=5.0) == ["a1", "a2"]
    assert backlog.take(8, max_delay=0.1, now=5.0) == ["c1"]


def test_a_full_group_beats_an_older_waiting_one() -> None:
    backlog: Backlog[int] = Backlog()
    backlog.add("old", 0, now=0.0)
    for i in range(4):
        backlog.add("new", i, now=0.01)
    assert backlog.take(4, max_delay=1.0, now=0.02) == [0, 1, 2, 3]


def test_stop_flushes_then_ends() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("a", 1), ("b", 2)])
    q.put(STOP)
    backlog: Backlog[int] = Backlog()
    clock = FakeClock()  # frozen: only the flush can release these
    got = [collect_batch(q, backlog, max_items=8, max_delay=60.0, clock=clock) for _ in range(2)]
    assert sorted(x for batch in got for x in batch) == [1, 2]
    assert collect_batch(q, backlog, max_items=8, max_delay=60.0, clock=clock) is None
    assert collect_batch(q, backlog, max_items=8, max_delay=60.0, clock=clock) is None


def test_blocks_while_empty() -> None:
    q: queue.Queue = queue.Queue()
    result: list = []
    t = threading.Thread(target=lambda: result.append(collect_batch(q, Backlog(), max_items=2, max_delay=0.0)))
    t.start()
    t.join(0.1)
    assert t.is_alive() and not result
    q.put([("k", 7)])
    t.join(2)
    assert result == [[7]]


def test_the_request_with_fewest_windows_left_goes_first() -> None:
    """A small request queued behind a big one is done in the very next batch; equal ones keep arrival order."""
    q: queue.Queue = queue.Queue()
    q.put([("k", f"big{i}") for i in range(40)])
    q.put([("k", "small0"), ("k", "small1")])
    q.put([("k", "other0"), ("k", "other1")])
    backlog: Backlog[str] = Backlog()
    first = collect_batch(q, backlog, max_items=8, max_delay=0.0)
    assert first == ["small0", "small1", "other0", "other1", "big0", "big1", "big2", "big3"]
    second = collect_batch(q, backlog, max_items=8, max_delay=0.0)
    assert second == [f"big{i}" for i in range(4, 12)]  # each request's own order is kept


def test_nothing_on_its_way_releases_a_partial_batch_at_once() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("k", 1)])
    clock = FakeClock()  # frozen: the delay never passes
    on_the_way = [1]
    backlog: Backlog[int] = Backlog()
    got: list = []
    t = threading.Thread(
        target=lambda: got.append(
            collect_batch(q, backlog, max_items=8, max_delay=60.0, clock=clock, arriving=lambda: on_the_way[0])
        )
    )
    t.start()
    t.join(0.1)
    assert t.is_alive() and not got  # another request is being decoded: wait for it
    on_the_way[0] = 0
    q.put([("k", 2)])  # it arrives; nothing else is coming
    t.join(2)
    assert got == [[1, 2]]
    q.put([("k", 3)])
    assert collect_batch(q, backlog, max_items=8, max_delay=60.0, clock=clock, arriving=lambda: 0) == [3]


def test_higher_priority_goes_first_and_fills_the_batch_first() -> None:
    q: queue.Queue = queue.Queue()
    q.put(Message([("k", f"low{i}") for i in range(6)], rank=1))
    q.put(Message([("k", "hi0"), ("k", "hi1")], rank=0))
    q.put(Message([("other", "low-other")], rank=1))
    backlog: Backlog[str] = Backlog()
    first = collect_batch(q, backlog, max_items=4, max_delay=0.0)
    assert first == ["hi0", "hi1", "low0", "low1"]
    assert collect_batch(q, backlog, max_items=4, max_delay=0.0) == ["low2", "low3", "low4", "low5"]
    assert collect_batch(q, backlog, max_items=4, max_delay=0.0) == ["low-other"]


def test_a_group_with_higher_priority_beats_an_older_one() -> None:
    backlog: Backlog[str] = Backlog()
    backlog.add("batch-job", "old", now=0.0, rank=1)
    backlog.add("upload", "new", now=1.0, rank=0)
    assert backlog.take(8, max_delay=0.0, now=2.0) == ["new"]
    assert backlog.take(8, max_delay=0.0, now=2.0) == ["old"]


def test_per_key_batch_limits() -> None:
    backlog: Backlog[int] = Backlog(limit=lambda key: 1 if key == "big" else 3)
    for i in range(3):
        backlog.add("big", i, now=0.0)
        backlog.add("small", 10 + i, now=0.5)
    assert backlog.take(8, max_delay=60.0, now=1.0) == [0]  # full at one, though the delay has not passed
    assert backlog.take(8, max_delay=60.0, now=1.0) == [1]
    assert backlog.take(8, max_delay=60.0, now=1.0) == [2]
    assert backlog.take(8, max_delay=60.0, now=1.0) == [10, 11, 12]


def test_while_the_device_is_busy_a_partial_batch_waits_for_company() -> None:
    """hold_until: only a full batch leaves before the device is free; then the partial one, with what joined."""
    q: queue.Queue = queue.Queue()
    q.put([("k", 1)])
    timer = threading.Timer(0.03, lambda: q.put([("k", 2)]))
    timer.start()
    started = time.monotonic()
    # Past its 1 ms delay and with nobody arriving, it would go at once; held until the device is free.
    batch = collect_batch(
        q, Backlog(), max_items=8, max_delay=0.001, arriving=lambda: 0, block=False, hold_until=started + 0.06
    )
    assert batch == [1, 2] and time.monotonic() - started >= 0.055


def test_with_a_lane_free_work_is_taken_as_it_comes_until_the_first_batch_is_due_back() -> None:
    """until: a batch that becomes due before then goes at once; with none, [] comes back at that time."""
    q: queue.Queue = queue.Queue()
    started = time.monotonic()
    assert collect_batch(q, Backlog(), max_items=8, max_delay=0.001, block=True, until=started + 0.03) == []
    assert time.monotonic() - started >= 0.025
    timer = threading.Timer(0.02, lambda: q.put([("k", 1)]))
    timer.start()
    started = time.monotonic()
    batch = collect_batch(q, Backlog(), max_items=8, max_delay=0.001, arriving=lambda: 0, until=started + 5.0)
    assert batch == [1] and time.monotonic() - started < 1.0


def test_a_full_batch_does_not_wait_for_the_device() -> None:
    q: queue.Queue = queue.Queue()
    q.put([("k", i) for i in range(4)])
    clock = FakeClock()
    assert collect_batch(q, Backlog(), max_items=4, max_delay=1.0, clock=clock, block=False, hold_until=200.0) == [
        0,
        1,
        2,
        3,
    ]


def test_while_held_a_partial_group_is_not_overtaken_by_full_groups_of_later_arrivals() -> None:
    """On a busy device a lone small upload waits for company, but once batches go at all it goes in
    arrival order: a stream of full batches (a large photo's windows) must not overtake it for seconds."""
    backlog: Backlog[str] = Backlog(limit=lambda key: 4)
    backlog.add("small", "s1", now=0.0)
    assert backlog.take(4, max_delay=0.005, now=0.010, hold=True) == 0.0  # held: nothing is full
    for i in range(8):
        backlog.add("large", f"l{i}", now=0.020)
    assert backlog.take(4, max_delay=0.005, now=0.021, hold=True) == ["s1"]  # older, and a batch goes anyway
    assert backlog.take(4, max_delay=0.005, now=0.022, hold=True) == ["l0", "l1", "l2", "l3"]
    backlog.add("small", "s2", now=0.030)
    # Not yet waited its delay: the full group goes first, the new small one keeps waiting for company.
    assert backlog.take(4, max_delay=0.005, now=0.031, hold=True) == ["l4", "l5", "l6", "l7"]
    assert backlog.take(4, max_delay=0.005, now=0.040, hold=True) == 0.0


def test_a_batch_not_full_is_topped_up_oldest_group_first_as_fits_allows() -> None:
    backlog: Backlog[str] = Backlog()
    backlog.add("b", "b1", now=2.0)
    backlog.add("a", "a1", now=1.0)
    backlog.add("a", "a2", now=1.5)
    backlog.add("c", "c1", now=3.0)
    asked: list[tuple[str, int]] = []

    def fits(key: object, count: int) -> bool:
        asked.append((str(key), count))
        return key != "b"

    assert backlog.top_up(2, fits) == ["a1", "a2"]
    assert asked == [("a", 2)] and len(backlog) == 2  # full after the oldest group: nothing more asked
    assert backlog.top_up(5, fits) == ["c1"] and asked[1:] == [("b", 1), ("c", 1)]
    assert len(backlog) == 1
