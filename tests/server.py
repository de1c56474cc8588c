"""Start srserve in a subprocess on a free loopback port and wait until it is ready.

Used by the integration tests, the benchmark and the client's tests: the real
server, not an in-process stand-in.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` in an exposition ``text`` whose labels include ``labels``."""
    want = (labels or {}).items()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and want <= sample.labels.items()
    )


@contextmanager
def running_server(
    log_dir: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
    port: int | None = None,
    module: str = "srserve.service",
    args: Sequence[str] = ("serve",),
) -> Iterator[Server]:
    """Run ``python -m <module> <args>`` with ``SR_*`` overrides until the block exits.

    ``module="tests.slow_serve"`` adds the slow test model (give it ``SR_WEIGHTS_DIR`` from
    :func:`tests.slow_model.slow_weights_dir`).
    """
    port = port or free_port()
    log = Path(log_dir) / f"server-{port}.log"
    full_env = {
        **os.environ,
        "SR_HOST": "127.0.0.1",
        "SR_PORT": str(port),
        "SR_LOG_LEVEL": "warning",
        "SR_DEVICE": "cpu",  # the same answers on a GPU machine; the cuda tests ask for cuda
        "SR_DRAIN_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout} s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
