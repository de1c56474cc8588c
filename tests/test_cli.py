"""`srserve upscale` on files and folders in this process, and `srserve serve` refusing bad settings."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srserve.files import write_atomic
from srserve.service.cli import build_parser, main
from tests.conftest import smooth_image


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_follows_the_umask_like_cp(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "out.bin"
    write_atomic(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert mode(target) == 0o666 & ~umask  # 0640, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary left


def test_a_folder_is_mirrored_into_a_folder(tmp_path: Path, umask: int, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    Image.fromarray(smooth_image(20, 24, seed=1)).save(src / "top.png")
    Image.fromarray(smooth_image(18, 16, seed=2)).save(src / "a" / "b" / "deep.jpg", quality=95)
    (src / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["upscale", str(src), str(out), "--model", "bicubic", "--scale", "2"]) == 0
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert made == ["a/b/deep.png", "top.png"]
    with Image.open(out / "a" / "b" / "deep.png") as im:
        assert im.size == (32, 36)
    assert mode(out / "top.png") == 0o640
    assert "top.png 24x20 ->" in capsys.readouterr().out


def test_a_file_to_a_file_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    Image.fromarray(smooth_image(30, 40)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "x" / "out.jpg"), "--scale", "2"]) == 0
    with Image.open(tmp_path / "x" / "out.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (80, 60))


def test_a_bad_file_in_a_folder_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(16, 16)).save(src / "good.png")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    assert main(["upscale", str(src), str(out), "--model", "nearest", "--scale", "3"]) == 1
    assert [p.name for p in out.iterdir()] == ["good.png"]
    assert "broken.png" in capsys.readouterr().err
    got = np.asarray(Image.open(out / "good.png"))
    assert got.shape == (48, 48, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuch"], "nosuch"),
        (["--device", "tpu"], "tpu"),
    ],
)
def test_wrong_options_exit_2_before_writing(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    Image.fromarray(smooth_image(16, 16)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), str(tmp_path / "out" / "o.png"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_shows_every_default() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert_help_shows_defaults(sub.choices["upscale"])


def assert_help_shows_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option with a default says it in ``--help``."""
    text = "".join(parser.format_help().split())  # argparse wraps long values (paths) at any hyphen
    options = [a for a in parser._actions if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)]
    assert options
    for action in options:
        shown = "".join(f"(default: {action.default})".split())
        assert shown in text, f"{action.option_strings[0]} does not show its default"


def test_serve_refuses_bad_settings_at_start(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("SR_PRECISION", '{"espcm": "fp16"}')
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "SR_PRECISION" in err and "espcm" in err and "espcn" in err
    monkeypatch.setenv("SR_PRECISION", '{"espcn": "fp8"}')
    assert main(["serve"]) == 2
    assert "SR_PRECISION_ESPCN" in capsys.readouterr().err


def test_restore_then_upscale_locally(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(smooth_image(30, 40)).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert main(["upscale", str(tmp_path / "in.png"), str(out), "--scale", "2", "--restore", "denoise"]) == 0
    with Image.open(out) as im:
        assert im.size == (80, 60)
    assert main(["upscale", str(tmp_path / "in.png"), str(out), "--model", "dejpeg"]) == 0  # x1 by default
    with Image.open(out) as im:
        assert im.size == (40, 30)
    assert main(["upscale", str(tmp_path / "in.png"), str(out), "--restore", "bicubic"]) == 2
    assert "not a restoration model" in capsys.readouterr().err
