"""Import layering: one ``srserve`` namespace; models/ is pure PyTorch; the client needs no torch."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.conftest import REPO

SHIPPED = ("srserve", "models", "service", "client", "weights")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_models_do_not_import_service_or_client() -> None:
    files = python_files("models")
    assert len(files) > 10
    for path in files:
        bad = {m for m in imported_modules(path) if m.startswith(("srserve.service", "srserve.client", "bench"))}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_service_never_imports_the_bench() -> None:
    """The simulated accelerator (bench/sim_accelerator.py) is reachable through bench/simserve.py only."""
    for path in python_files("service", "srserve"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("bench", "tests")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_client_does_not_import_torch_or_the_service() -> None:
    """srbatch runs on machines without the model stack."""
    for path in python_files("client"):
        bad = {
            m
            for m in imported_modules(path)
            if m.split(".")[0] in ("torch", "numpy", "PIL") or m.startswith(("srserve.service", "srserve.models"))
        }
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_nothing_imports_the_folders_by_their_bare_names() -> None:
    """`import models` would work from the repository root and load a second copy of every module."""
    for path in python_files(*SHIPPED, "tests", "bench"):
        bare = {m for m in imported_modules(path) if m.split(".")[0] in ("models", "service", "client", "weights")}
        assert not bare, f"{path.relative_to(REPO)} imports {bare}; use srserve.*"


def test_every_package_folder_is_shipped_under_srserve() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {prefix: Path(folder) for prefix, folder in config["package-dir"].items()}
    on_disk = set()
    for prefix, folder in folders.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((prefix, *parts)))
    assert on_disk <= set(config["packages"]), f"not shipped: {sorted(on_disk - set(config['packages']))}"
