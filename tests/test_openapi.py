"""The OpenAPI document tells the truth: schemathesis generates requests from it against the real
server and checks every answer (no server error; status code, content type, headers and body as
documented)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inprocess import app_client
from tests.server import running_server

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
ENV = {"SR_TILE_SIZE": "64", "SR_MAX_INPUT_PIXELS": "250000", "SR_MAX_OUTPUT_PIXELS": "1000000", "SR_WARMUP": "false"}


@pytest.mark.slow
def test_schemathesis_finds_every_answer_as_documented(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a test dependency"
    with running_server(tmp_path, ENV) as s:
        run = subprocess.run(
            [
                cli,
                "run",
                f"{s.url}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--workers",
                "2",
                "--request-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,  # its cache (.schemathesis/) goes there, not into the checkout
        )
        server_log = s.output()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Traceback" not in server_log, server_log[-3000:]


def test_without_keys_no_operation_declares_security() -> None:
    with app_client(warmup=False) as client:
        doc = client.get("/openapi.json").json()
    operations = [op for ops in doc["paths"].values() for op in ops.values()]
    assert operations and not any("security" in op for op in operations)
    with app_client(warmup=False, api_keys="k") as client:
        doc = client.get("/openapi.json").json()
    assert "security" in doc["paths"]["/v1/upscale"]["post"]


def test_error_bodies_are_one_documented_schema() -> None:
    with app_client(warmup=False) as client:
        doc = client.get("/openapi.json").json()
    detail = doc["components"]["schemas"]["ErrorDetail"]["properties"]
    assert detail["allowed"]["anyOf"][0]["type"] == "array"
    upscale = doc["paths"]["/v1/upscale"]["post"]["responses"]
    for code in ("400", "401", "413", "415", "422", "503", "504"):
        assert upscale[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    scales = doc["components"]["schemas"]["ModelInfo"]["properties"]["scales"]
    assert scales["type"] == "array" and scales["items"]["type"] == "integer"
