"""srbatch against real servers on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from srserve.client.cli import build_parser
from srserve.client.cli import main as srbatch
from srserve.client.inputs import discover, plan_outputs
from srserve.client.replicas import Replicas, backoff, retry_after_seconds
from tests import imagegen
from tests.community_models import write_models
from tests.server import Server, free_port, metric_value, running_server
from tests.slow_model import slow_weights_dir

pytestmark = pytest.mark.slow  # real server processes

# Warm-up (the cost measurement, 13 s a start here) is not what these tests are about.
FAST = {"SR_TILE_SIZE": "64", "SR_MAX_BATCH_DELAY_MS": "5", "SR_WARMUP": "false"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("models")
    write_models(models, ["compact"])  # a community file: srbatch takes it from /v1/models like any model
    with running_server(tmp_path_factory.mktemp("srbatch"), {**FAST, "SR_MODELS_DIR": str(models)}) as s:
        yield s


def make_tree(root: Path, corrupt: bool = True) -> list[Path]:
    files = {
        "a.png": ("PNG", (20, 30)),
        "b.jpg": ("JPEG", (24, 24)),
        "sub/c.webp": ("WEBP", (18, 22)),
        "sub/deeper/d.bmp": ("BMP", (16, 40)),
        "sub/deeper/e.tiff": ("TIFF", (30, 12)),
    }
    made = []
    for i, (rel, (fmt, (h, w))) in enumerate(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(imagegen.encode(imagegen.rgb(h, w, seed=i), fmt))
        made.append(path)
    if corrupt:
        (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (root / "notes.txt").write_text("not an image")
    return made


def run(url: str, out: Path, inputs: list, *extra: str, model: str = "espcn", scale: float = 2) -> int:
    """srbatch INPUTS --out OUT --model MODEL --scale SCALE --url URL EXTRA..., with log lines."""
    args = [*map(str, inputs), "--out", str(out), "--model", model, "--scale", f"{scale:g}", "--url", url]
    return srbatch([*args, *extra, "--progress", "log"])


def test_nested_tree_mixed_formats_and_a_corrupt_file(server: Server, tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    make_tree(src)
    code = run(server.url, out, [src], "--report", str(rep))
    assert code == 1  # one failure
    report = json.loads(rep.read_text())
    counts = {k: report["summary"][k] for k in ("ok", "skipped", "failed", "total")}
    assert counts == {"ok": 5, "skipped": 0, "failed": 1, "total": 6}
    broken = next(f for f in report["files"] if f["status"] == "failed")
    assert broken["input"].endswith("broken.png") and "422" in broken["error"] and "readable" in broken["error"]
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert outputs == ["a.png", "b.png", "sub/c.png", "sub/deeper/d.png", "sub/deeper/e.png"]
    with Image.open(out / "sub/deeper/d.png") as im:
        assert im.size == (80, 32)
    for f in report["files"]:
        if f["status"] == "ok":
            assert f["bytes_in"] > 0 and f["bytes_out"] > 0 and f["latency_s"] > 0 and f["attempts"] == 1
    # A rerun skips what exists and retries only the failure.
    assert run(server.url, out, [src], "--report", str(rep)) == 1
    assert json.loads(rep.read_text())["summary"]["skipped"] == 5


def test_a_community_model_at_its_scale(server: Server, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    made = make_tree(src, corrupt=False)
    assert run(server.url, out, [src], model="compact", scale=4) == 0
    with Image.open(made[0]) as a, Image.open(out / "a.png") as b:
        assert b.size == (4 * a.width, 4 * a.height)
    assert run(server.url, tmp_path / "out2", [src], model="compact", scale=2) == 2  # refused up front


def test_globs_formats_and_overwrite(server: Server, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    make_tree(src, corrupt=False)
    assert (
        run(
            server.url,
            out,
            [src / "sub" / "**" / "*.bmp", src / "a.png"],
            "--format",
            "jpeg",
            "--quality",
            "70",
            model="bicubic",
            scale=3,
        )
        == 0
    )
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == ["a.jpg", "deeper/d.jpg"]
    before = (out / "a.jpg").stat().st_mtime_ns
    assert run(server.url, out, [src / "a.png"], "--format", "jpeg", "--overwrite", model="bicubic", scale=3) == 0
    assert (out / "a.jpg").stat().st_mtime_ns != before


def test_busy_server_503s_are_retried(tmp_path: Path) -> None:
    weights = slow_weights_dir(tmp_path / "weights", 0.05)  # batches take this long on any machine
    env = {"SR_TILE_SIZE": "32", "SR_MAX_QUEUE_TILES": "3", "SR_MAX_BATCH_TILES": "1", "SR_RETRY_AFTER_S": "1"}
    env |= {"SR_WEIGHTS_DIR": str(weights), "SR_MODELS": "slow"}
    env["SR_MAX_QUEUE_WAIT_S"] = "600"  # the window bound alone, not the predicted wait
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    for i in range(12):
        imagegen.rgb(60, 60, seed=i).save(src / f"{i:02}.png")  # 4 windows each: two never fit at once
    with running_server(tmp_path, env, module="tests.slow_serve") as s:
        assert run(s.url, out, [src], "--concurrency", "6", "--report", str(rep), model="slow") == 0
        rejected = metric_value(s.metrics(), "srserve_rejections_total", {"reason": "queue_full"})
        answered_low = metric_value(s.metrics(), "srserve_requests_total", {"status": "200", "priority": "low"})
    report = json.loads(rep.read_text())
    assert report["summary"]["ok"] == 12 and rejected > 0
    assert answered_low == 12  # a batch job goes behind interactive uploads
    assert max(f["attempts"] for f in report["files"]) > 1
    assert any("503" in h for f in report["files"] for h in f["history"])


def test_killed_run_leaves_no_partial_file_and_a_rerun_completes(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    n = 40
    for i in range(n):
        imagegen.rgb(90, 90, seed=i).save(src / f"{i:02}.png")
    with running_server(tmp_path, {"SR_TILE_SIZE": "64", "SR_WARMUP": "false"}) as s:
        cmd = [
            sys.executable,
            "-m",
            "srserve.client.cli",
            str(src),
            "--out",
            str(out),
            "--model",
            "deconv",
            "--scale",
            "4",
            "--url",
            s.url,
            "--concurrency",
            "2",
            "--progress",
            "log",
        ]
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(list(out.glob("*.png"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_first = sorted(out.glob("*.png"))
        assert 5 <= len(done_first) < n, "the run was not interrupted mid-way"
        for p in done_first:  # every file under a final name is whole
            with Image.open(p) as im:
                im.load()
                assert im.size == (360, 360)
        rep = tmp_path / "r.json"
        assert run(s.url, out, [src], "--report", str(rep), model="deconv", scale=4) == 0
        served = metric_value(s.metrics(), "srserve_requests_total", {"status": "200", "route": "/v1/upscale"})
    summary = json.loads(rep.read_text())["summary"]
    assert summary["skipped"] == len(done_first) and summary["ok"] == n - len(done_first)
    assert len(list(out.glob("*.png"))) == n
    assert not [p for p in out.iterdir() if p.name.startswith(".srbatch-")]
    assert n <= served <= n + 2  # at most the two in flight at the kill were computed twice


UPSCALE = {"route": "/v1/upscale"}


def test_two_replicas_share_the_load_and_a_dead_one_is_avoided(server: Server, tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    for i in range(16):
        imagegen.rgb(40, 40, seed=i).save(src / f"{i:02}.png")
    dead = f"http://127.0.0.1:{free_port()}"
    with running_server(tmp_path, FAST) as second:
        before = [metric_value(x.metrics(), "srserve_requests_total", UPSCALE) for x in (server, second)]
        assert (
            run(server.url, out, [src], "--url", second.url, "--url", dead, "--concurrency", "4", "--report", str(rep))
            == 0
        )
        after = [metric_value(x.metrics(), "srserve_requests_total", UPSCALE) for x in (server, second)]
    report = json.loads(rep.read_text())
    assert report["summary"]["ok"] == 16
    assert all(a - b > 0 for a, b in zip(after, before, strict=True)), "both replicas served"
    assert all(f["replica"] != dead for f in report["files"])


def test_never_writes_outside_out(server: Server, tmp_path: Path) -> None:
    src, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    out.mkdir()
    imagegen.rgb().save(src / "sub" / "x.png")
    imagegen.rgb().save(src / "y.png")
    (out / "sub").symlink_to(outside, target_is_directory=True)
    rep = tmp_path / "r.json"
    assert run(server.url, out, [src], "--report", str(rep), model="nearest") == 1
    assert list(outside.iterdir()) == []
    failed = [f for f in json.loads(rep.read_text())["files"] if f["status"] == "failed"]
    assert len(failed) == 1 and "outside" in failed[0]["error"]
    assert (out / "y.png").is_file()


def test_file_names_that_are_not_utf8(server: Server, tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in", tmp_path / "out", tmp_path / "r.json"
    src.mkdir()
    name = os.fsdecode(b"caf\xe9 \xff.png")
    imagegen.rgb().save(os.path.join(src, name), format="PNG")
    assert run(server.url, out, [src], "--report", str(rep)) == 0
    assert os.path.exists(os.path.join(out, name))
    entry = json.loads(rep.read_text())["files"][0]
    assert entry["status"] == "ok" and "\\xe9" in entry["input"]


def test_api_key_is_sent(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    imagegen.rgb().save(src / "a.png")
    with running_server(tmp_path, {**FAST, "SR_API_KEYS": "sekrit"}) as s:
        assert run(s.url, out, [src]) == 2  # told by /v1/models, before anything is sent
        assert not out.exists()
        assert run(s.url, out, [src], "--api-key", "sekrit") == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["x.png"],
        ["x.png", "--out", "o", "--model", "espcn"],
        ["{src}", "--out", "o", "--model", "espcn", "--scale", "2", "--width", "10"],
        ["missing-file.png", "--out", "o", "--model", "m", "--scale", "2"],
        ["{src}", "--out", "o", "--model", "m", "--scale", "2", "--concurrency", "0"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path) -> None:
    imagegen.rgb().save(tmp_path / "a.png")
    args = [a.replace("{src}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as err:
        srbatch(args)
    assert err.value.code == 2


def test_output_names_mirror_and_collisions_keep_both(tmp_path: Path) -> None:
    for name in ("a.jpg", "a.png", "b.tif"):
        imagegen.rgb().save(tmp_path / name)
    tasks = plan_outputs(discover([str(tmp_path)]), Path("/o"), "webp")
    assert sorted(str(t.relative) for t in tasks) == ["a.jpg.webp", "a.png.webp", "b.webp"]


def test_retry_after_and_backoff() -> None:
    assert retry_after_seconds("3") == 3.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    delays = [backoff(a) for a in range(8)]
    assert all(0 < d <= 45 for d in delays) and delays[6] > delays[0]
    assert backoff(0, retry_after=5.0) >= 5.0


def test_fewest_outstanding_first() -> None:
    replicas = Replicas(["http://a", "http://b"])
    a, b = replicas.replicas
    a.outstanding = 3
    assert replicas.pick() is b
    assert replicas.pick(avoid={"http://b"}) is a
    replicas.mark_down(b)
    assert replicas.pick() is a
    b.down_until = 0.0
    b.outstanding = a.outstanding = 0
    assert {replicas.pick().url for _ in range(4)} == {"http://a", "http://b"}  # equal loads take turns


def test_progress_bar_on_request(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        imagegen.rgb(seed=i).save(src / f"{i}.png")
    assert (
        srbatch(
            [
                str(src),
                "--out",
                str(tmp_path / "out"),
                "--model",
                "espcn",
                "--scale",
                "2",
                "--url",
                server.url,
                "--progress",
                "bar",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "3/3" in err and "img/s" in err and "100%" in err


@pytest.mark.parametrize(
    ("model", "scale", "message"),
    [("espcm", 2, "unknown model 'espcm'"), ("espcn", 5, "has scales [2, 3, 4], not 5")],
)
def test_an_unknown_model_or_scale_stops_before_anything_is_sent(
    server: Server, tmp_path: Path, model: str, scale: float, message: str, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "in", tmp_path / "out" / "nested"
    src.mkdir()
    imagegen.rgb().save(src / "a.png")
    before = metric_value(server.metrics(), "srserve_requests_total", UPSCALE)
    assert run(server.url, out, [src], model=model, scale=scale) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no empty folders left behind
    assert metric_value(server.metrics(), "srserve_requests_total", UPSCALE) == before


def test_no_server_at_all_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    imagegen.rgb().save(tmp_path / "a.png")
    assert run(f"http://127.0.0.1:{free_port()}", tmp_path / "out", [tmp_path / "a.png"]) == 2
    assert "no server answered" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_width_and_height(server: Server, tmp_path: Path) -> None:
    imagegen.rgb(30, 40).save(tmp_path / "a.png")  # 40x30
    out = tmp_path / "out"
    args = [str(tmp_path / "a.png"), "--out", str(out), "--model", "bicubic", "--url", server.url, "--progress", "log"]
    assert srbatch([*args, "--width", "100"]) == 0
    with Image.open(out / "a.png") as im:
        assert im.size == (100, 75)
    assert srbatch([*args, "--width", "64", "--height", "20", "--overwrite"]) == 0
    with Image.open(out / "a.png") as im:
        assert im.size == (64, 20)


def test_help_shows_every_default() -> None:
    from tests.test_cli import assert_help_shows_defaults

    assert_help_shows_defaults(build_parser())


def test_restore_runs_before_the_upscaler(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    imagegen.rgb(20, 30).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert run(server.url, out, [tmp_path / "a.png"], "--restore", "dejpeg", model="espcn", scale=2) == 0
    with Image.open(out / "a.png") as im:
        assert im.size == (60, 40)
    assert run(server.url, tmp_path / "o2", [tmp_path / "a.png"], "--restore", "bicubic") == 2
    assert "not a restoration model" in capsys.readouterr().err
