"""The threads: compute and codec threads run at a higher nice than the event loop (Linux: nice is per
thread), and the codec pool is as large as the cores this process may use."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import httpx
import pytest

from srserve.service.priority import lower_this_thread, shorten_gil_turns
from srserve.service.settings import Settings
from tests import imagegen
from tests.server import running_server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def nice_of(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def in_thread(fn) -> object:
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_lowering_is_absolute_per_thread_and_capped() -> None:
    base = nice_of(os.getpid())

    def lowered_then_child() -> tuple[int, int, int]:
        lower_this_thread(3)
        mine = nice_of(threading.get_native_id())

        def child() -> tuple[int, int]:  # a thread it starts (an OpenMP team) inherits, and lowering again
            inherited = nice_of(threading.get_native_id())  # from there does not add a second time
            lower_this_thread(3)
            return inherited, nice_of(threading.get_native_id())

        inherited, again = in_thread(child)
        return mine, inherited, again

    assert in_thread(lowered_then_child) == (base + 3, base + 3, base + 3)
    assert nice_of(os.getpid()) == base  # the caller's threads are untouched

    def capped() -> int:
        lower_this_thread(40)
        return nice_of(threading.get_native_id())

    assert in_thread(capped) == 19

    def unchanged() -> int:
        lower_this_thread(0)
        return nice_of(threading.get_native_id())

    assert in_thread(unchanged) == base


def test_setting_is_bounded() -> None:
    assert Settings().worker_nice == 10
    with pytest.raises(ValueError):
        Settings(worker_nice=20)


def thread_nices(pid: int) -> dict[int, int]:
    """Every thread of ``pid`` and its nice (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        after_comm = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = int(after_comm[16])
    return out


@pytest.mark.slow
def test_real_server_runs_its_loop_above_its_compute_and_codec_threads(tmp_path: Path) -> None:
    env = {"SR_MODELS": "bicubic", "SR_WORKER_NICE": "7", "SR_IO_THREADS": "2"}
    with running_server(tmp_path, env) as s:
        data = imagegen.encode(imagegen.rgb(40, 30))
        for _ in range(3):  # the codec pool starts its threads on demand
            r = httpx.post(f"{s.url}/v1/upscale", params={"model": "bicubic"}, files={"image": ("x.png", data)})
            assert r.status_code == 200, r.text
        nices = thread_nices(s.process.pid)
        base = nices[s.process.pid]  # the main thread runs the event loop
        lowered = [tid for tid, nice in nices.items() if nice == base + 7]
        assert len(lowered) >= 3, nices  # the worker and both codec threads at least
        assert all(nice in (base, base + 7) for nice in nices.values()), nices
        assert httpx.get(f"{s.url}/healthz", timeout=5).status_code == 200


def test_io_threads_default_to_the_cores_this_process_may_use() -> None:
    from srserve.service.settings import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))
    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mine)})  # as a cpuset of one core would
        assert usable_cores() == 1 and Settings().io_threads == 2  # at least 2: one may wait on a disk or socket
    finally:
        os.sched_setaffinity(0, mine)


def test_the_gil_switch_interval_is_the_setting() -> None:
    before = sys.getswitchinterval()
    try:
        assert Settings().gil_switch_ms == 0.5
        shorten_gil_turns(Settings(gil_switch_ms=2).gil_switch_ms)
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)
