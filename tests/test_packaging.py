"""The wheel as a user installs it: a torch-free client, and a server that finds its weights.

Slow (two fresh virtual environments); it builds the wheel from this tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, smooth_image

pytestmark = pytest.mark.slow


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO, cwd=out)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("srserve-*.whl")
    return path


def fresh_venv(where: Path) -> Path:
    venv.create(where, with_pip=True)
    return where / "bin"


def clean_env() -> dict[str, str]:
    """No PYTHONPATH or virtual environment of the test run leaks into the fresh one."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def test_the_wheel_holds_one_namespace_and_the_weights(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"srserve"}, f"top-level names besides srserve: {tops}"
    shipped = {Path(n).name for n in names if n.startswith("srserve/weights/")}
    on_disk = {p.name for p in (REPO / "weights").iterdir() if p.suffix in (".safetensors", ".json")}
    assert on_disk and on_disk <= shipped
    for page_file in ("index.html", "app.js", "compare.js", "page.css"):
        assert f"srserve/service/static/{page_file}" in names
    assert not any(n.startswith(("tests/", "srserve/tests/")) for n in names)


def test_the_bare_install_is_the_client_without_torch(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    env = clean_env()
    installed = run(bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", wheel, cwd=tmp_path, env=env)
    assert installed.returncode == 0, installed.stderr
    helped = run(bin_dir / "srbatch", "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "--out" in helped.stdout and "default" in helped.stdout
    torch = run(bin_dir / "python", "-c", "import torch", cwd=tmp_path, env=env)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    server = run(bin_dir / "srserve", "upscale", "--help", cwd=tmp_path, env=env)
    assert server.returncode != 0  # the server needs the [server] extra


def test_the_server_extra_upscales_with_the_shipped_weights(wheel: Path, tmp_path: Path) -> None:
    bin_dir = fresh_venv(tmp_path / "venv")
    env = clean_env()
    installed = run(
        bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", f"{wheel}[server]", cwd=tmp_path, env=env
    )
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(smooth_image(24, 32)).save(elsewhere / "in.png")
    upscale = ("upscale", "in.png", "out.png", "--model", "espcn", "--scale", "2")
    done = run(bin_dir / "srserve", *upscale, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    with Image.open(elsewhere / "out.png") as im:
        assert im.size == (64, 48)
    where = run(
        bin_dir / "python", "-c", "import srserve.models.catalog as c; print(c.DEFAULT_WEIGHTS_DIR)", cwd=elsewhere
    )
    assert "site-packages" in where.stdout, where.stdout + where.stderr
