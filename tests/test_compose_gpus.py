"""deploy/compose_gpus.py: one compose replica per GPU, each pinned to its own device."""

from __future__ import annotations

import subprocess
import sys

import jsonschema
import pytest
from check_jsonschema.builtin_schemas import get_builtin_schema

from tests import compose
from tests.conftest import REPO

SCRIPT = REPO / "deploy" / "compose_gpus.py"


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


@pytest.mark.parametrize("count", [1, 2, 4])
def test_each_gpu_gets_a_replica_of_its_own(count: int) -> None:
    done = generate(str(count))
    assert done.returncode == 0, done.stderr
    override = compose.load(done.stdout)
    jsonschema.validate(override, get_builtin_schema("vendor.compose-spec"))
    services = override["services"]
    assert list(services) == ["srserve", *(f"srserve-gpu{i}" for i in range(1, count))]
    pinned = [d for s in services.values() for d in devices(s)]
    assert [d["device_ids"] for d in pinned] == [[str(i)] for i in range(count)]  # distinct, one each
    assert all("count" not in d and d["capabilities"] == ["gpu"] for d in pinned)
    # `!override`: the base file's `count: 1` is replaced, not merged beside the pin.
    assert done.stdout.count("devices: !override") == count
    base = compose.load((REPO / "docker-compose.yml").read_text())
    for name, service in services.items():
        # nginx's upstream and Prometheus' DNS discovery resolve `srserve`: every replica answers to it.
        assert service["networks"]["default"]["aliases"] == ["srserve"]
        if name != "srserve":
            extends = service["extends"]
            assert extends["service"] in base["services"] and (REPO / extends["file"]).is_file()
    upstream = (REPO / "deploy" / "nginx" / "upstreams.compose.conf").read_text()
    assert "server srserve:8000 resolve;" in upstream
    scrape = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "names: [srserve]" in scrape


def test_gpu_uuids_and_bad_lists() -> None:
    done = generate("2", "--ids", "GPU-aaaa", "GPU-bbbb")
    assert done.returncode == 0, done.stderr
    override = compose.load(done.stdout)
    assert [devices(s)[0]["device_ids"] for s in override["services"].values()] == [["GPU-aaaa"], ["GPU-bbbb"]]
    assert "--ids GPU-aaaa GPU-bbbb" in done.stdout  # the header says how to make it again
    for args in (["0"], ["2", "--ids", "1", "1"], ["3", "--ids", "0", "1"]):
        refused = generate(*args)
        assert refused.returncode == 2 and refused.stdout == "", args


def test_docs_no_longer_promise_gpus_from_scale() -> None:
    for name in ("docker-compose.yml", "README.md"):
        text = (REPO / name).read_text()
        assert "one GPU each" not in text, name
        assert "compose_gpus.py" in text, name
