"""Sending every task with bounded concurrency, retries and atomic writes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from srserve.client.inputs import TEMP_PREFIX, Task, UnsafePath, check_inside, display
from srserve.client.replicas import RETRY_STATUSES, Replicas, backoff, retry_after_seconds
from srserve.files import write_atomic as write_whole


@dataclass
class Options:
    out_dir: Path
    params: dict[str, Any]
    concurrency: int = 4
    retries: int = 6
    timeout_s: float = 300.0
    overwrite: bool = False
    api_key: str | None = None
    progress: bool = True


@dataclass
class Result:
    input: str
    output: str
    status: str  # ok | skipped | failed
    bytes_in: int = 0
    bytes_out: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    replica: str | None = None
    http_status: int | None = None
    error: str | None = None
    history: list[str] = field(default_factory=list)


def write_atomic(path: Path, data: bytes) -> None:
    """Whole or not at all, with the umask's mode; its temporary name is one ``remove_stale_temporaries`` knows."""
    write_whole(path, data, prefix=TEMP_PREFIX)


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary files a killed run left behind."""
    removed = 0
    for root, _, files in os.walk(out_dir):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(Path(root) / name)
                    removed += 1
    return removed


def server_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    message = f"HTTP {response.status_code} {error.get('code', '')}: {error.get('message', '')}"
    if error.get("allowed") is not None:
        message += f" (allowed: {error['allowed']})"
    return message


class Runner:
    def __init__(self, tasks: list[Task], replicas: Replicas, options: Options) -> None:
        self.tasks = tasks
        self.replicas = replicas
        self.options = options
        self.results: list[Result] = []
        headers = {"Content-Type": "application/octet-stream"}
        if options.api_key:
            headers["X-API-Key"] = options.api_key
        self.headers = headers

    def _log(self, bar: tqdm | None, result: Result) -> None:
        line = f"{result.status:7} {display(result.input)}"
        if result.status == "ok":
            line += f" -> {display(result.output)} ({result.latency_s:.2f} s, {result.attempts} tries)"
        elif result.error:
            line += f": {result.error}"
        if bar is not None:
            if result.status == "failed":
                bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    async def _send(self, client: httpx.AsyncClient, task: Task) -> Result:
        result = Result(str(task.source), str(task.output), "failed")
        try:
            check_inside(task.output, self.options.out_dir)
        except UnsafePath as e:
            result.error = str(e)
            return result
        if task.output.exists() and not self.options.overwrite:
            result.status = "skipped"
            return result
        try:
            data = await asyncio.to_thread(task.source.read_bytes)
        except OSError as e:
            result.error = f"cannot read the input: {e.strerror or e}"
            return result
        result.bytes_in = len(data)
        avoid: set[str] = set()
        started = time.monotonic()
        for attempt in range(self.options.retries + 1):
            replica = self.replicas.pick(avoid)
            result.attempts, result.replica = attempt + 1, replica.url
            replica.outstanding += 1
            replica.sent += 1
            retry_after = None
            try:
                response = await client.post(
                    f"{replica.url}/v1/upscale", params=self.options.params, content=data, headers=self.headers
                )
            except httpx.TransportError as e:
                self.replicas.mark_down(replica)
                result.error = f"{type(e).__name__} from {replica.url}: {e}"
            else:
                result.http_status = response.status_code
                if response.status_code == 200:
                    try:
                        task.output.parent.mkdir(parents=True, exist_ok=True)
                        check_inside(task.output, self.options.out_dir)  # again: folders now exist
                        await asyncio.to_thread(write_atomic, task.output, response.content)
                    except (OSError, UnsafePath) as e:
                        result.error = f"cannot write the output: {e}"
                        return result
                    result.status, result.error = "ok", None
                    result.bytes_out = len(response.content)
                    result.latency_s = time.monotonic() - started
                    return result
                result.error = server_message(response)
                if response.status_code not in RETRY_STATUSES:
                    return result  # a 4xx no retry can fix: record the server's word and go on
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            finally:
                replica.outstanding -= 1
            result.history.append(result.error or "")
            if len(self.replicas.replicas) > 1:
                avoid.add(replica.url)  # the next try goes elsewhere when it can
            if attempt < self.options.retries:
                await asyncio.sleep(backoff(attempt, retry_after=retry_after))
        result.latency_s = time.monotonic() - started
        return result

    async def run(self) -> list[Result]:
        queue: asyncio.Queue[Task] = asyncio.Queue()
        for t in self.tasks:
            queue.put_nowait(t)
        bar = (
            tqdm(total=len(self.tasks), unit="img", dynamic_ncols=True, file=sys.stderr)
            if self.options.progress
            else None
        )
        limits = httpx.Limits(
            max_connections=self.options.concurrency * len(self.replicas.replicas),
            max_keepalive_connections=self.options.concurrency * len(self.replicas.replicas),
        )
        timeout = httpx.Timeout(self.options.timeout_s, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def worker() -> None:
                while True:
                    try:
                        task = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    result = await self._send(client, task)
                    self.results.append(result)
                    self._log(bar, result)
                    if bar is not None:
                        bar.update(1)

            await asyncio.gather(*(worker() for _ in range(self.options.concurrency)))
        if bar is not None:
            bar.close()
        return self.results


def report(results: list[Result], elapsed: float, replicas: Replicas) -> dict[str, Any]:
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    files = []
    for r in results:
        entry = asdict(r)
        entry["input"], entry["output"] = display(r.input), display(r.output)
        files.append(entry)
    return {
        "summary": {
            **counts,
            "total": len(results),
            "seconds": round(elapsed, 3),
            "images_per_s": round(counts["ok"] / elapsed, 3) if elapsed > 0 else None,
            "replicas": {r.url: r.sent for r in replicas.replicas},
        },
        "files": files,
    }
