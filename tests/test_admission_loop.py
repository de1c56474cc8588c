"""Admission against measured reality, deterministically: a slow model that advances a fake clock.

Each batch of :class:`ClockedDoubler` moves the engine's clock on by ``batch_s``
instead of sleeping, so the time every request takes is set by the test, not by
the machine. The cost model is told the model is 4x cheaper than it is, as a
wrong warm-up measurement would: admission must learn the truth from real batches.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from srserve.service.cost_model import CostModel, Sample
from srserve.service.engine import Engine, QueueFull
from tests.test_engine import image, make_engine, route_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class ClockedDoubler(torch.nn.Module):
    """x2 nearest whose every batch takes ``batch_s`` of the fake clock."""

    scale = 2

    def __init__(self, clock: FakeClock, batch_s: float) -> None:
        super().__init__()
        self.clock, self.batch_s = clock, batch_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.batch_s)
        return x.repeat_interleave(2, -2).repeat_interleave(2, -1)


def clocked_engine(batch_s: float, limit_s: float, told_s: float | None = None) -> tuple[Engine, object, FakeClock]:
    """``told_s``: what the cost model says a batch takes (default: a quarter of the truth)."""
    clock = FakeClock()
    engine, route = make_engine(
        ClockedDoubler(clock, batch_s),
        max_batch_tiles=1,  # one request a batch: a request's time is the batches ahead of it, exactly
        max_batch_delay_s=0.0,
        max_queue_wait_s=limit_s,
        clock=clock,
    )
    told = batch_s / 4 if told_s is None else told_s
    route.entry.cost = CostModel((Sample(16 * 16, 1, told),), max_batch=1)
    return engine, route, clock


async def closed_loop(engine: Engine, route: object, clock: FakeClock, clients: int, rounds: int) -> dict:
    """``clients`` each send, await the answer and send again, ``rounds`` times; refused ones resend at once."""
    answers: list[tuple[float, float]] = []  # (real, predicted) seconds from admission to answer
    refusals = 0

    async def client(i: int) -> None:
        nonlocal refusals
        done = 0
        while done < rounds:
            pixels = image(i)
            try:
                job = engine.submit(route_for(route, pixels), pixels, clock() + 1e6)
            except QueueFull:
                refusals += 1
                await asyncio.sleep(0.001)
                continue
            await job.future
            receipt = job.receipt()
            # Answered when computed: nothing is encoded here, and the worker's clock has run on meanwhile.
            engine.observe_answer(receipt, answered=receipt.computed)
            answers.append((receipt.computed - receipt.admitted, receipt.prediction.answer_s))
            done += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"answers": answers, "refusals": refusals}


def run_loop(engine: Engine, *loops: tuple[int, int], route: object, clock: FakeClock) -> list[dict]:
    async def scenario() -> list[dict]:
        return [await closed_loop(engine, route, clock, clients, rounds) for clients, rounds in loops]

    engine.start()
    try:
        return asyncio.run(scenario())
    finally:
        engine.stop(10)


def mean_ratio(answers: list[tuple[float, float]]) -> float:
    return sum(real / predicted for real, predicted in answers) / len(answers)


def test_predictions_follow_measured_times_at_short_and_long_queues() -> None:
    engine, route, clock = clocked_engine(batch_s=0.1, limit_s=1e6)
    _, alone, crowd = run_loop(engine, (4, 10), (1, 20), (16, 10), route=route, clock=clock)  # first: to learn
    # Alone, each answer is one 0.1 s batch; behind up to 15 others, up to 1.6 s. Predicted within 10% at
    # both, though the cost model said 0.025 s a batch.
    assert [round(real, 6) for real, _ in alone["answers"]] == [0.1] * 20
    assert mean_ratio(alone["answers"][5:]) == pytest.approx(1.0, abs=0.1)
    long = [(real, predicted) for real, predicted in crowd["answers"] if real >= 1.2]
    assert len(long) >= 40
    assert mean_ratio(long) == pytest.approx(1.0, abs=0.1)
    assert max(abs(real / predicted - 1) for real, predicted in long) < 0.25


@pytest.mark.parametrize("clients", [4, 9])
def test_a_closed_loop_is_never_refused_while_its_whole_queue_fits_the_limit(clients: int) -> None:
    """N x 0.1 s under the 1 s limit: every request of N closed-loop clients admitted, from the first.

    The cost model is right here, as warm-up measures it on the machine it runs on: with one 4x off,
    work queued before the first batches corrected it keeps its old price a while (see the closing
    note of issue 28), and a loop at 0.7-0.9 of the limit sees a few refusals then."""
    engine, route, clock = clocked_engine(batch_s=0.1, limit_s=1.0, told_s=0.1)
    (loop,) = run_loop(engine, (clients, 15), route=route, clock=clock)
    assert loop["refusals"] == 0
    assert max(real for real, _ in loop["answers"]) <= 1.0 + 1e-6


def test_a_closed_loop_over_the_limit_is_refused_and_what_is_admitted_is_answered_in_time() -> None:
    engine, route, clock = clocked_engine(batch_s=0.1, limit_s=1.0)
    _, loop = run_loop(engine, (4, 10), (16, 10), route=route, clock=clock)  # 16 x 0.1 s: over the 1 s limit
    assert loop["refusals"] > 0
    late = [real for real, _ in loop["answers"] if real > 1.0 + 1e-6]
    assert len(late) <= len(loop["answers"]) // 20  # those admitted are answered within the limit
