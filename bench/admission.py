"""Admission under ordinary load, overload and a retry storm (issue 28), espcn x2 by default.

    python -m bench.admission                 # everything: ~20 minutes on 2 cores
    python -m bench.admission --quick         # shorter runs, fewer loads
    python -m bench.admission --only ordinary --json out.json

* **ordinary**: two servers start at once, one with default settings (``srserve``) and
  one with ``SR_MAX_QUEUE_WAIT_S`` out of reach (``unlimited``: the same server with
  admission out of the way, the peer that shows what could have been served). Closed
  loops of 16 and 64 clients, each sending its next upload when it has its answer and
  retrying a refused one at once, on photo-like and on noise PNGs of 256x256, 512x512,
  1024x768 and mixed 48-400 px. The servers alternate cell by cell, the one not driven
  stopped (SIGSTOP). The first cell runs as soon as ``/readyz`` turns 200; after the
  whole matrix each server takes a 4x open-loop overload episode, then the matrix runs
  again. Per cell: 200s, 503s, throughput, and the default server's throughput over
  the unlimited one's.
* **overload**: Poisson arrivals at 4x the unlimited server's measured capacity at
  256x256 on a fresh default server: accepted p99 against ``SR_MAX_QUEUE_WAIT_S`` + 2x
  the unloaded p99, 503 p99, every status (nothing but 200 and 503), nothing lost.
* **storm**: 4 clients that honour ``Retry-After`` alone, then beside 8 that retry a
  refused upload at once, each client from its own loopback address; the 4's
  throughput with the storm over without it.

Each cell also reads the server's ``srserve_answer_prediction_ratio`` histogram: the
real time to the answer over the predicted one. Numbers only, no pass/fail. Run it
with nothing else busy on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import numpy as np

from bench.load import Target, make_image, open_loop, percentile, png_bytes
from tests.server import Server, metric_value, running_server

UNLIMITED_WAIT_S = "100000"


@dataclass(frozen=True)
class Load:
    name: str
    sizes: list[tuple[int, int]]  # (height, width)
    seconds: float  # how long a cell of it runs (large images need longer to count)


def mixed_sizes(count: int = 24, seed: int = 0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(48, 400), rng.randint(48, 400)) for _ in range(count)]


LOADS = [
    Load("256x256", [(256, 256)], 10.0),
    Load("512x512", [(512, 512)], 12.0),
    Load("1024x768", [(768, 1024)], 20.0),
    Load("mixed 48-400", mixed_sizes(), 10.0),
]
CLIENTS = (16, 64)
CONTENTS = ("photo", "noise")


def bodies_for(load: Load, content: str, count: int = 16) -> list[bytes]:
    """PNG uploads of ``load``'s sizes: photo-like (smooth + grain) or uniform noise (costly to decode)."""
    out = []
    for i in range(count):
        h, w = load.sizes[i % len(load.sizes)]
        if content == "photo":
            image = make_image(h, w, seed=i)
        else:
            image = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append(png_bytes(image))
    return out


@dataclass
class Tally:
    """What a set of clients got: one entry per response."""

    seconds: float = 0.0
    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    uploads: int = 0  # distinct uploads sent (a retry is the same upload)
    served: int = 0  # uploads answered 200 in the end

    def add(self, other: Tally) -> None:
        """Fold in another run of the same clients (a later round)."""
        self.seconds += other.seconds
        self.statuses += other.statuses
        self.latencies += other.latencies
        self.uploads += other.uploads
        self.served += other.served

    def count(self, status: int) -> int:
        return self.statuses.count(status)

    def summary(self) -> dict:
        ok = [t for t, s in zip(self.latencies, self.statuses, strict=True) if s == 200]
        n = len(self.statuses)
        return {
            "responses": n,
            "ok": len(ok),
            "refused_503": self.count(503),
            "other": {str(s): self.statuses.count(s) for s in set(self.statuses) - {200, 503}},
            "ok_share": len(ok) / n if n else float("nan"),
            "uploads": self.uploads,
            "uploads_served": self.served,
            "throughput_img_s": len(ok) / self.seconds if self.seconds else float("nan"),
            "p50_ms": 1000 * percentile(ok, 50),
            "p99_ms": 1000 * percentile(ok, 99),
            "max_ms": 1000 * max(ok) if ok else float("nan"),
        }


def client_for(url: str, address: str | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    return httpx.AsyncClient(base_url=url, timeout=600, transport=transport, limits=httpx.Limits(max_connections=1))


async def clients_loop(
    url: str,
    params: dict,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    *,
    honour_retry_after: bool = False,
    first_address: int | None = None,
) -> Tally:
    """``clients`` closed-loop clients for ``seconds``; a 503 is retried at once, or after its ``Retry-After``.

    ``first_address``: client i sends from 127.0.0.<first_address + i> (distinct clients to the server).
    """
    tally = Tally()
    stop_at = time.perf_counter() + seconds

    async def one(i: int) -> None:
        address = f"127.0.0.{first_address + i}" if first_address is not None else None
        async with client_for(url, address) as client:
            k = i
            while time.perf_counter() < stop_at:
                body = bodies[k % len(bodies)]
                k += clients
                tally.uploads += 1
                while True:
                    t0 = time.perf_counter()
                    try:
                        r = await client.post(
                            "/v1/upscale", params=params, content=body, headers={"Content-Type": "image/png"}
                        )
                        status = r.status_code
                    except httpx.HTTPError:
                        status = 0
                    tally.latencies.append(time.perf_counter() - t0)
                    tally.statuses.append(status)
                    if status == 200:
                        tally.served += 1
                        break
                    if status != 503 or time.perf_counter() >= stop_at:
                        break
                    if honour_retry_after:
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    tally.seconds = time.perf_counter() - start
    return tally


def prediction_ratio(before: str, after: str) -> dict:
    """Mean and share within 0.8-1.25 of real/predicted answer times between two scrapes."""
    name = "srserve_answer_prediction_ratio"

    def d(suffix: str, labels: dict | None = None) -> float:
        return metric_value(after, name + suffix, labels) - metric_value(before, name + suffix, labels)

    count = d("_count")
    if not count:
        return {"answers": 0}
    near = d("_bucket", {"le": "1.25"}) - d("_bucket", {"le": "0.8"})
    return {"answers": int(count), "mean": d("_sum") / count, "within_0.8_1.25": near / count}


@contextmanager
def paused(server: Server) -> Iterator[None]:
    """``server`` runs inside the block, stopped outside it (its idle loops would take the cores)."""
    os.kill(server.process.pid, signal.SIGCONT)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGSTOP)


def cell(server: Server, params: dict, load: Load, content: str, clients: int, scale_s: float) -> dict:
    bodies = bodies_for(load, content)
    before = server.metrics()
    tally = asyncio.run(clients_loop(server.url, params, bodies, clients, load.seconds * scale_s))
    out = tally.summary()
    out["prediction"] = prediction_ratio(before, server.metrics())
    return out


#: Open-loop arrivals come from this many loopback addresses: independent users, not one client's resends.
SOURCES = 200


def overload_episode(server: Server, params: dict, rate: float, seconds: float) -> dict:
    bodies = bodies_for(LOADS[0], "photo", 32)
    target = Target("srserve", server.url, "/v1/upscale", params)
    result = asyncio.run(open_loop(target, bodies, rate, seconds, sources=SOURCES))
    statuses = result.statuses
    return {
        "offered": len(statuses),
        "accepted": statuses.count(200),
        "refused_503": statuses.count(503),
        "other": {str(s): statuses.count(s) for s in set(statuses) - {200, 503}},
        "accepted_p99_ms": 1000 * percentile(result.of(200), 99),
        "refusal_p99_ms": 1000 * percentile(result.of(503), 99),
    }


def ordinary(args: argparse.Namespace, log_dir: Path) -> dict:
    """The matrix on both servers, right after ready and after an overload episode."""
    params = {"model": args.model, "scale": args.scale}
    loads = LOADS[:1] + LOADS[3:] if args.quick else LOADS
    scale_s = 0.5 if args.quick else 1.0
    report: dict = {"cells": [], "overload_episodes": {}}
    with ExitStack() as stack:
        servers = {
            "srserve": stack.enter_context(running_server(log_dir, {})),
            "unlimited": stack.enter_context(running_server(log_dir, {"SR_MAX_QUEUE_WAIT_S": UNLIMITED_WAIT_S})),
        }
        for s in servers.values():
            os.kill(s.process.pid, signal.SIGSTOP)
        try:
            capacity = None
            for phase in ("after ready", "after overload"):
                if phase == "after overload":
                    for name, s in servers.items():
                        with paused(s):
                            ep = overload_episode(s, params, 4 * capacity, 8.0 * scale_s)
                        report["overload_episodes"][name] = ep
                        print(f"overload episode {name}: {ep}", flush=True)
                k = 0
                for load in loads:
                    for content in CONTENTS:
                        for clients in CLIENTS:
                            row = {"phase": phase, "load": load.name, "content": content, "clients": clients}
                            order = list(servers) if k % 2 == 0 else list(reversed(servers))
                            k += 1
                            for name in order:
                                with paused(servers[name]):
                                    row[name] = cell(servers[name], params, load, content, clients, scale_s)
                            a, b = row["srserve"], row["unlimited"]
                            row["throughput_ratio"] = a["throughput_img_s"] / b["throughput_img_s"]
                            if capacity is None:
                                capacity = b["throughput_img_s"]
                            report["cells"].append(row)
                            print(
                                f"{phase:14} {load.name:12} {content:5} c{clients:<3} srserve "
                                f"{a['ok']:4} ok {a['refused_503']:5} x503 {a['throughput_img_s']:6.2f} img/s  "
                                f"unlimited {b['ok']:4} ok {b['throughput_img_s']:6.2f} img/s  "
                                f"ratio {row['throughput_ratio']:.2f}  ok share {a['ok_share']:.3f}  "
                                f"pred {a['prediction'].get('mean', float('nan')):.2f}",
                                flush=True,
                            )
        finally:
            for s in servers.values():
                os.kill(s.process.pid, signal.SIGCONT)
    return report


def unloaded_p99(server: Server, params: dict, count: int = 20) -> float:
    bodies = bodies_for(LOADS[0], "photo", count)
    tally = asyncio.run(clients_loop(server.url, params, bodies, 1, 4.0))
    return tally.summary()["p99_ms"]


def overload(args: argparse.Namespace, log_dir: Path) -> dict:
    """4x open-loop arrivals on a fresh default server; capacity from a 16-client closed loop."""
    params = {"model": args.model, "scale": args.scale}
    with running_server(log_dir, {}) as s:
        p99 = unloaded_p99(s, params)
        warm = asyncio.run(clients_loop(s.url, params, bodies_for(LOADS[0], "photo"), 16, 6.0)).summary()
        capacity = warm["throughput_img_s"]
        ep = overload_episode(s, params, 4 * capacity, args.overload_s)
        limit = float(httpx.get(f"{s.url}/v1/models").json()["limits"]["max_queue_wait_s"])
    ep.update(
        capacity_img_s=capacity,
        offered_rate=4 * capacity,
        unloaded_p99_ms=p99,
        max_queue_wait_s=limit,
        accepted_p99_bound_ms=1000 * limit + 2 * p99,
    )
    print(f"overload: {ep}", flush=True)
    return ep


def storm(args: argparse.Namespace, log_dir: Path) -> dict:
    """4 clients honouring Retry-After, alone and beside 8 that retry at once, on 1024x768 (over the limit).

    The two phases alternate for ``--storm-rounds`` rounds on one server, so that the machine's drift
    (minutes long on shared cores) falls on both alike; kept is the ratio of their totals.
    """
    params = {"model": args.model, "scale": args.scale}
    load = LOADS[2]
    bodies = bodies_for(load, "photo", 12)
    seconds = args.storm_s

    def honest() -> Awaitable[Tally]:
        return clients_loop(s.url, params, bodies, 4, seconds, honour_retry_after=True, first_address=2)

    async def both(first_rude: int) -> tuple[Tally, Tally]:
        rude = clients_loop(s.url, params, bodies, 8, seconds, first_address=first_rude)
        return await asyncio.gather(honest(), rude)

    alone, with_storm, rude = Tally(), Tally(), Tally()
    with running_server(log_dir, {}) as s:
        asyncio.run(clients_loop(s.url, params, bodies, 4, 4.0, honour_retry_after=True, first_address=2))
        for i in range(args.storm_rounds):
            alone.add(asyncio.run(honest()))
            # New addresses each round: the storm's clients start as strangers, not demoted by the last round.
            pair = asyncio.run(both(first_rude=10 + 8 * i))
            with_storm.add(pair[0])
            rude.add(pair[1])
    out = {
        "load": load.name,
        "rounds": args.storm_rounds,
        "honouring_alone": alone.summary(),
        "honouring_with_storm": with_storm.summary(),
        "storm": rude.summary(),
    }
    out["kept"] = out["honouring_with_storm"]["throughput_img_s"] / out["honouring_alone"]["throughput_img_s"]
    print(
        f"storm: the 4 alone {out['honouring_alone']['throughput_img_s']:.2f} img/s, beside the storm "
        f"{out['honouring_with_storm']['throughput_img_s']:.2f} img/s (kept {out['kept']:.2f}); the 8: "
        f"{out['storm']['ok']} ok, {out['storm']['refused_503']} x 503",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="admission", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="half-length cells, 256x256 and mixed only")
    p.add_argument("--only", nargs="*", default=["ordinary", "overload", "storm"])
    p.add_argument("--overload-s", type=float, default=15.0)
    p.add_argument("--storm-s", type=float, default=20.0, help="seconds of each phase of a storm round")
    p.add_argument("--storm-rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report: dict = {"config": {"model": args.model, "scale": args.scale, "cpus": os.cpu_count()}}
    with TemporaryDirectory() as tmp:
        for part, fn in (("ordinary", ordinary), ("overload", overload), ("storm", storm)):
            if part in args.only:
                report[part] = fn(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
