"""models/ is pure PyTorch: it never imports the service or the client."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_models_do_not_import_service_or_client() -> None:
    files = sorted((REPO / "models").rglob("*.py"))
    assert len(files) > 10
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("service", "client", "bench")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_client_does_not_import_torch_or_the_service() -> None:
    """srbatch runs on machines without the model stack."""
    for path in sorted((REPO / "client").rglob("*.py")):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("torch", "service", "models")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
