"""srserve side by side with its limit and its peer, in one run (espcn x2 by default).

    python -m bench.compare                  # the full run: ~15 minutes on 2 cores
    python -m bench.compare --quick          # fewer requests, one round
    python -m bench.compare --json out.json
    python -m bench.compare --loads 256x256 --skip overload memory   # one load, all rounds
    python -m bench.compare --device cuda --loads 256x256 --skip overload memory --quick   # device check

For each load (256x256, 512x512, 1024x768, and a mixed-size set) it measures:

* **model alone**: the same weights on each whole image, one at a time, with no
  tiles, no codec and no HTTP: the limit a server approaches;
* **model on lanes** (CPU): the same, but one whole image per core at once, each on
  one thread (``service/cpu_lanes.py``): the most these cores compute of this model
  on whole images, so the ceiling of a server that runs each image whole, as srserve
  does up to ~256x256 (a server also decodes, encodes and talks HTTP on the same
  cores, and here the load generator runs on them too); larger images beat it in
  cache-sized windows;
* **srserve** (default settings but ``SR_MAX_QUEUE_WAIT_S=600``, started here) and **LitServe 0.2.19** serving the
  same weights (``bench/litserve_peer.py``: max_batch_size 16, batch_timeout 5 ms,
  PNG at zlib level 1), each driven by closed loops of 1 and 16 clients uploading
  PNGs; rounds alternate the two servers so drift of this shared machine hits both;
* srserve's **computed pixels / image pixels** (its metrics);
* **overload**: open-loop Poisson arrivals at 4x srserve's measured capacity at
  256x256: what was accepted, its p99, how fast 503s come back, and anything lost;
* **memory**: peak RSS growth of the server for one 4096x4096 x2 request against
  the bytes of its output.

Numbers only, no pass/fail: speed targets live here, not in the tests. Run it
with nothing else busy on the machine (a training run on 2 cores corrupts it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from bench.load import MIXED, Target, closed_loop, images_for, open_loop, percentile, png_bytes
from srserve.models.allocator import keep_large_allocations
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service.cpu_lanes import CpuLanes
from srserve.service.inference import predict
from tests.server import REPO, free_port, metric_value, running_server


@dataclass(frozen=True)
class Load:
    name: str
    sizes: list[tuple[int, int]]
    requests: dict[int, int]  # concurrency -> requests


LOADS = [
    Load("256x256", [(256, 256)], {1: 40, 16: 128}),
    Load("512x512", [(512, 512)], {1: 12, 16: 48}),
    Load("1024x768", [(768, 1024)], {16: 24}),
    Load("mixed", MIXED, {1: 32, 16: 96}),
]


def model_alone(model: str, scale: int, images: list[np.ndarray], repeats: int = 3, device: str = "cpu") -> float:
    """Images/s of the bare model on whole images, one at a time (best of ``repeats`` passes)."""
    where = torch.device(device)
    module, _ = get_upsampler(model, scale, weights_dir=DEFAULT_WEIGHTS_DIR, device=where)
    for im in images[:2]:  # warm-up (oneDNN prepares per shape)
        predict(module, im[None], device=where)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for im in images:
            predict(module, im[None], device=where)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def model_on_lanes(model: str, scale: int, images: list[np.ndarray], repeats: int = 3) -> float:
    """Images/s of the bare model on whole images, one per core at once on one thread each (best of
    ``repeats``): on a CPU, the model's own ceiling on these cores."""
    module, _ = get_upsampler(model, scale, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")
    lanes = CpuLanes(torch.get_num_threads())

    def run(image: np.ndarray) -> np.ndarray:
        return predict(module, image, device=torch.device("cpu"))

    def once() -> None:
        for future in [lanes.submit(run, im[None]) for im in images]:
            future.result()

    try:
        once()  # warm-up: each lane thread's first pass
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            once()
            best = max(best, len(images) / (time.perf_counter() - start))
        return best
    finally:
        lanes.close()


@contextmanager
def litserve_peer(model: str, scale: int, log_dir: Path, device: str = "cpu") -> Iterator[tuple[Target, int]]:
    """The peer running on a free port: its target and its process group."""
    port = free_port()
    log = open(log_dir / f"litserve-{port}.log", "wb")  # noqa: SIM115 - closed below
    args = [sys.executable, "-m", "bench.litserve_peer", "--port", str(port), "--model", model, "--scale", str(scale)]
    args += ["--accelerator", "cuda" if device.startswith("cuda") else "cpu"]
    # Its own process group: LitServe spawns API-server and worker processes that must end with it.
    proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LitServe did not start: {(log_dir / f'litserve-{port}.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield Target("litserve", url, "/predict", {}, json_base64=True), proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(1)
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def alone_count(load: Load) -> int:
    """Enough whole images for about a second of model time."""
    pixels = sum(h * w for h, w in load.sizes) / len(load.sizes)
    return max(len(load.sizes), min(16, int(16 * 256 * 256 / pixels)))


def drive(target: Target, load: Load, concurrency: int, count: int, metrics_url: str | None) -> dict:
    bodies = [png_bytes(im) for im in images_for(load.sizes, count)]
    asyncio.run(closed_loop(target, bodies[: max(2, concurrency)], concurrency))  # warm-up, unmeasured
    before = httpx.get(metrics_url, timeout=10).text if metrics_url else ""
    result = asyncio.run(closed_loop(target, bodies, concurrency))
    out = result.summary()
    if metrics_url:
        after = httpx.get(metrics_url, timeout=10).text

        def delta(name: str) -> float:
            return metric_value(after, name) - metric_value(before, name)

        out["computed_px_per_image_px"] = delta("srserve_computed_pixels_total") / delta("srserve_image_pixels_total")
        out["windows_per_batch"] = delta("srserve_batch_tiles_sum") / max(1.0, delta("srserve_batch_tiles_count"))
    return out


def stop_controls(srserve_pid: int, litserve_group: int) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """(pause, resume) of each server, both paused now: the one not measured is stopped (SIGSTOP)."""
    controls = {
        "srserve": (
            lambda: os.kill(srserve_pid, signal.SIGSTOP),
            lambda: os.kill(srserve_pid, signal.SIGCONT),
        ),
        "litserve": (
            lambda: os.killpg(litserve_group, signal.SIGSTOP),
            lambda: os.killpg(litserve_group, signal.SIGCONT),
        ),
    }
    for pause, _ in controls.values():
        pause()
    return controls


@contextmanager
def running(pause: Callable[[], None], resume: Callable[[], None]) -> Iterator[None]:
    resume()
    try:
        yield
    finally:
        pause()


def run_servers(args: argparse.Namespace, log_dir: Path, loads: list[Load]) -> dict:
    """``{server: {load: {concurrency: [round results]}}}``.

    Both servers start once; the one not being measured is stopped (SIGSTOP: LitServe's idle
    loops take ~15% of a core). Each load and concurrency runs srserve and LitServe back to back,
    in alternating order round by round, beside a fresh timing of the model alone.
    """
    results: dict = {"srserve": {}, "litserve": {}}
    params = {"model": args.model, "scale": args.scale}
    # Closed loops never overload (each client waits for its answer) but can queue more than the
    # default 3 s: measured here is throughput, so nothing is shed. Overload runs apart.
    env = {"SR_LOG_LEVEL": "warning", "SR_MAX_QUEUE_WAIT_S": "600", "SR_DEVICE": args.device}
    on_cpu = args.device == "cpu"
    peer = litserve_peer(args.model, args.scale, log_dir, args.device)
    with running_server(log_dir, env) as srv, peer as (lit, lit_group):
        targets = {
            "srserve": (Target("srserve", srv.url, "/v1/upscale", params), f"{srv.url}/metrics"),
            "litserve": (lit, None),
        }
        controls = stop_controls(srv.process.pid, lit_group)
        try:
            for round_ in range(args.rounds):
                order = ("srserve", "litserve") if round_ % 2 == 0 else ("litserve", "srserve")
                for load in loads:
                    for concurrency, count in load.requests.items():
                        count = max(concurrency, count // (3 if args.quick else 1))
                        # The limit, timed right beside each pair: this machine's speed drifts by 2x in minutes.
                        images = images_for(load.sizes, alone_count(load))
                        alone = model_alone(args.model, args.scale, images, device=args.device)
                        lanes = model_on_lanes(args.model, args.scale, images) if on_cpu else float("nan")
                        for server in order:
                            target, metrics_url = targets[server]
                            with running(*controls[server]):
                                r = drive(target, load, concurrency, count, metrics_url)
                            r["model_alone_img_s"] = alone
                            r["over_model"] = r["throughput_img_s"] / alone
                            r["model_lanes_img_s"] = lanes
                            r["over_lanes"] = r["throughput_img_s"] / lanes
                            results[server].setdefault(load.name, {}).setdefault(concurrency, []).append(r)
                            print(
                                f"round {round_ + 1} {server:8} {load.name:9} c{concurrency:<3} "
                                f"{r['throughput_img_s']:6.2f} img/s  p50 {r['p50_ms']:7.0f} ms  "
                                f"p99 {r['p99_ms']:7.0f} ms  model alone {alone:6.2f} img/s, on lanes {lanes:6.2f}"
                                + (f"  computed {r['computed_px_per_image_px']:.3f}x" if metrics_url else "")
                                + (f"  errors {r['errors']}" if r["errors"] else ""),
                                flush=True,
                            )
        finally:
            for _, resume in controls.values():
                resume()  # so that they can shut down
    return results


def overload(args: argparse.Namespace, log_dir: Path, capacity: float, unloaded_p99_ms: float) -> dict:
    """Poisson arrivals at 4x ``capacity`` (256x256 uploads) for ``args.overload_s`` seconds."""
    rate = 4 * capacity
    bodies = [png_bytes(im) for im in images_for([(256, 256)], 32)]
    with running_server(log_dir, {"SR_LOG_LEVEL": "warning"}) as s:
        target = Target("srserve", s.url, "/v1/upscale", {"model": args.model, "scale": args.scale})
        asyncio.run(closed_loop(target, bodies[:16], 16))  # warm-up
        # From 200 addresses, as from independent users: from one, the same bodies again within a second are
        # early resends of refused uploads, which the server holds until their Retry-After (service/retries.py).
        result = asyncio.run(open_loop(target, bodies, rate, args.overload_s, sources=200))
        limit = float(json.loads(httpx.get(f"{s.url}/v1/models").text)["limits"].get("max_queue_wait_s", "nan"))
    accepted, refused = result.of(200), result.of(503)
    others = {str(code): result.statuses.count(code) for code in set(result.statuses) - {200, 503}}
    out = {
        "offered_rate": rate,
        "offered": len(result.statuses),
        "accepted": len(accepted),
        "refused_503": len(refused),
        "other_statuses": others,
        "transport_errors": sorted(set(result.errors)),
        "accepted_p50_ms": 1000 * percentile(accepted, 50),
        "accepted_p99_ms": 1000 * percentile(accepted, 99),
        "refusal_p99_ms": 1000 * percentile(refused, 99),
        "max_queue_wait_s": limit,
        "unloaded_p99_ms": unloaded_p99_ms,
        "accepted_p99_bound_ms": 1000 * limit + 2 * unloaded_p99_ms,
    }
    print(
        f"overload  {rate:.1f}/s offered: {out['accepted']} accepted (p50 {out['accepted_p50_ms']:.0f} ms, p99 "
        f"{out['accepted_p99_ms']:.0f} ms, bound {out['accepted_p99_bound_ms']:.0f} ms), {out['refused_503']} x 503 "
        f"(p99 {out['refusal_p99_ms']:.1f} ms), other {others or 'none'} {out['transport_errors'] or ''}",
        flush=True,
    )
    return out


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory(args: argparse.Namespace, log_dir: Path, side: int = 4096) -> dict:
    """Peak RSS growth of the server while it answers one ``side x side`` x2 upload."""
    body = png_bytes(images_for([(side, side)], 1)[0])
    env = {"SR_LOG_LEVEL": "warning", "SR_MAX_INPUT_PIXELS": str(side * side), "SR_MAX_OUTPUT_PIXELS": str(4 * side**2)}
    with running_server(log_dir, env) as s:
        small = images_for([(64, 64)], 1)[0]
        httpx.post(f"{s.url}/v1/upscale", params={"model": args.model, "scale": 2}, files={"image": png_bytes(small)})
        pid = s.process.pid
        base = rss_kib(pid, "VmRSS")
        # Reset the peak so it measures this request alone (Linux: write 5 to clear_refs).
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        start = time.perf_counter()
        r = httpx.post(
            f"{s.url}/v1/upscale", params={"model": args.model, "scale": 2}, files={"image": body}, timeout=600
        )
        seconds = time.perf_counter() - start
        peak = rss_kib(pid, "VmHWM")
    output_bytes = 4 * side * side * 3
    out = {
        "input": f"{side}x{side}",
        "status": r.status_code,
        "seconds": seconds,
        "server_timing": r.headers.get("server-timing"),
        "tile_plan": r.headers.get("x-tile-plan"),
        "output_pixel_bytes": output_bytes,
        "response_bytes": len(r.content),
        "peak_rss_growth_bytes": (peak - base) * 1024,
        "growth_per_output_byte": (peak - base) * 1024 / output_bytes,
    }
    print(
        f"memory    {side}x{side} x2: peak RSS +{out['peak_rss_growth_bytes'] / 2**20:.0f} MiB for a "
        f"{output_bytes / 2**20:.0f} MiB output ({out['growth_per_output_byte']:.2f}x) in {seconds:.1f} s; "
        f"{out['server_timing']}",
        flush=True,
    )
    return out


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def table(results: dict) -> str:
    """Medians over rounds; ratios are taken round by round against the model timed beside that run."""
    rows = [
        "| load | c | model alone img/s | model on lanes | srserve img/s | p50 / p99 ms | computed px | LitServe img/s "
        "| p50 / p99 ms | srserve / model | srserve / lanes | LitServe / model | srserve / LitServe "
        "| lanes / LitServe |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for load, by_c in results["srserve"].items():
        for c, rounds in by_c.items():
            lits = results["litserve"][load][c]
            ratio = statistics.median(
                s["throughput_img_s"] / lit["throughput_img_s"] for s, lit in zip(rounds, lits, strict=True)
            )
            ceiling = statistics.median(
                s["model_lanes_img_s"] / lit["throughput_img_s"] for s, lit in zip(rounds, lits, strict=True)
            )
            rows.append(
                f"| {load} | {c} | {median_of(rounds + lits, 'model_alone_img_s'):.2f} | "
                f"{median_of(rounds + lits, 'model_lanes_img_s'):.2f} | {median_of(rounds, 'throughput_img_s'):.2f} | "
                f"{median_of(rounds, 'p50_ms'):.0f} / {median_of(rounds, 'p99_ms'):.0f} | "
                f"{median_of(rounds, 'computed_px_per_image_px'):.3f}x | {median_of(lits, 'throughput_img_s'):.2f} | "
                f"{median_of(lits, 'p50_ms'):.0f} / {median_of(lits, 'p99_ms'):.0f} | "
                f"{median_of(rounds, 'over_model'):.2f} | {median_of(rounds, 'over_lanes'):.2f} | "
                f"{median_of(lits, 'over_model'):.2f} | {ratio:.2f} | {ceiling:.2f} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a third of the requests, one round")
    p.add_argument("--overload-s", type=float, default=15.0)
    p.add_argument("--skip", nargs="*", default=[], choices=["servers", "overload", "memory"])
    p.add_argument("--loads", nargs="*", default=[x.name for x in LOADS], choices=[x.name for x in LOADS])
    p.add_argument("--json", type=Path)
    p.add_argument("--device", default="cpu", help="where both servers and the model alone run (cuda: device check)")
    args = p.parse_args(argv)
    keep_large_allocations()  # as srserve does: the limit is measured with the same allocator
    if args.quick:
        args.rounds = 1
    report: dict = {
        "config": {
            "model": args.model,
            "scale": args.scale,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "rounds": args.rounds,
            "device": args.device,
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        if "servers" not in args.skip:
            results = run_servers(args, log_dir, [x for x in LOADS if x.name in args.loads])
            report["servers"] = results
            print("\n" + table(results) + "\n")
        if "servers" not in args.skip and "256x256" in args.loads:
            capacity = median_of(results["srserve"]["256x256"][16], "throughput_img_s")
            unloaded = median_of(results["srserve"]["256x256"][1], "p99_ms")
        else:
            capacity, unloaded = 10.0, 200.0
        if "overload" not in args.skip:
            report["overload"] = overload(args, log_dir, capacity, unloaded)
        if "memory" not in args.skip:
            report["memory"] = memory(args, log_dir)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
