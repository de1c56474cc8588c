"""The shipped monitoring and deployment files, run for real: Prometheus scraping
two replicas behind nginx, every dashboard query, the alert rules, and the
compose file against the compose-spec schema."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from srserve.service.settings import Settings
from tests import imagegen
from tests.compose import ComposeLoader
from tests.conftest import REPO
from tests.server import Server, free_port, metric_value, running_server

pytestmark = pytest.mark.slow  # real server processes

DEPLOY = REPO / "deploy"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
need_prometheus = pytest.mark.skipif(not (PROMETHEUS and PROMTOOL), reason="Debian's prometheus is not installed")
need_stack = pytest.mark.skipif(not (PROMETHEUS and NGINX), reason="Debian's prometheus and nginx are not installed")


# -- static checks -------------------------------------------------------------------------------


@need_prometheus
@pytest.mark.parametrize(
    "args",
    [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool(args: list[str]) -> None:
    done = subprocess.run([PROMTOOL, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cpu.yml"])
def test_compose_files_match_the_compose_spec(name: str) -> None:
    import jsonschema
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    document = yaml.load((REPO / name).read_text(), Loader=ComposeLoader)
    jsonschema.validate(document, schema)


def test_compose_stack_shape() -> None:
    compose = yaml.load((REPO / "docker-compose.yml").read_text(), Loader=ComposeLoader)
    services = compose["services"]
    assert set(services) == {"srserve", "nginx", "prometheus", "grafana"}
    gpu = services["srserve"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "ports" not in services["srserve"], "replicas must not bind a host port, or --scale fails"
    assert set(compose["volumes"]) == {"prometheus-data", "grafana-data"}
    mounted = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    for path in mounted:
        assert path in compose["volumes"] or (REPO / path).exists(), path
    cpu = yaml.load((REPO / "docker-compose.cpu.yml").read_text(), Loader=ComposeLoader)
    assert cpu["services"]["srserve"]["environment"]["SR_DEVICE"] == "cpu"


def test_upload_limits_agree() -> None:
    limit = Settings.model_fields["max_upload_bytes"].default
    conf = (DEPLOY / "nginx" / "srserve.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert size and int(size.group(1)) * 1024 * 1024 == limit
    assert str(limit) in conf  # the JSON body of nginx's own 413
    compose = yaml.load((REPO / "docker-compose.yml").read_text(), Loader=ComposeLoader)
    assert int(compose["services"]["srserve"]["environment"]["SR_MAX_UPLOAD_BYTES"]) == limit


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert "COPY weights" in text and "torch==2.13.0" in text


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_when_an_engine_runs() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine runs here")
    done = subprocess.run(["docker", "compose", "config", "-q"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_dashboard_json_is_generated_from_its_source() -> None:
    assert subprocess.run([sys.executable, str(DEPLOY / "grafana" / "dashboard.py"), "--check"]).returncode == 0


# -- the live stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    replicas: list[Server]
    prometheus: str
    nginx: str

    def query(self, expr: str) -> list:
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_prometheus(tmp: Path, targets: list[str], stack: ExitStack) -> str:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    for job in config["scrape_configs"]:
        if job["job_name"] == "srserve":  # the shipped job, pointed at loopback instead of Docker's DNS
            job.pop("dns_sd_configs")
            job["scrape_interval"] = "1s"
            job["static_configs"] = [{"targets": targets}]
    folder = tmp / "prometheus"
    folder.mkdir()
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", folder / "alerts.yml")
    port = free_port()
    log = open(folder / "log.txt", "wb")  # noqa: SIM115 - closed by the exit stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(lambda: (proc.terminate(), proc.wait(20)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready")
    return url


def start_nginx(tmp: Path, upstreams: list[str], stack: ExitStack) -> str:
    folder = tmp / "nginx"
    folder.mkdir()
    port = free_port()
    site = (DEPLOY / "nginx" / "srserve.conf").read_text().replace("listen 80;", f"listen 127.0.0.1:{port};")
    (folder / "srserve.conf").write_text(site)
    (folder / "srserve-upstreams.conf").write_text("".join(f"server {u};\n" for u in upstreams))
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join(f"{k}_temp_path {folder / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'};\n"
        f"daemon off;\nevents {{}}\nhttp {{\naccess_log {folder / 'access.log'};\n{temps}include srserve.conf;\n}}\n"
    )
    check = subprocess.run(
        [NGINX, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")])
    stack.callback(lambda: (proc.terminate(), proc.wait(20)))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/nginx-health")
    return url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (PROMETHEUS and NGINX):
        pytest.skip("Debian's prometheus and nginx are not installed")
    tmp = tmp_path_factory.mktemp("stack")
    env = {"SR_TILE_SIZE": "64", "SR_MAX_BATCH_DELAY_MS": "10"}
    with ExitStack() as es:
        replicas = [es.enter_context(running_server(tmp, env)) for _ in range(2)]
        hosts = [r.url.removeprefix("http://") for r in replicas]
        prometheus = start_prometheus(tmp, hosts, es)
        nginx = start_nginx(tmp, hosts, es)
        yield Stack(replicas, prometheus, nginx)


def upload(url: str, data: bytes, **params: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/upscale", params=params, content=data, headers={"Content-Type": "image/png"}, timeout=60
    )


@need_stack
def test_nginx_spreads_requests_over_both_replicas(stack: Stack) -> None:
    data = imagegen.encode(imagegen.rgb(40, 40))
    with ThreadPoolExecutor(4) as pool:
        codes = list(
            pool.map(lambda i: upload(stack.nginx, data, model="espcn", scale=2 + i % 3).status_code, range(24))
        )
    assert codes == [200] * 24
    served = [metric_value(r.metrics(), "srserve_requests_total", {"route": "/v1/upscale"}) for r in stack.replicas]
    assert all(n > 0 for n in served), served
    r = httpx.get(f"{stack.nginx}/readyz", headers={"X-Request-ID": "via-nginx"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "via-nginx"


@need_stack
def test_nginx_answers_its_own_errors_as_json(stack: Stack) -> None:
    too_big = b"\0" * (Settings.model_fields["max_upload_bytes"].default + 1)
    r = upload(stack.nginx, too_big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"


@need_stack
def test_prometheus_scrapes_every_replica_and_loads_the_alerts(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        up = stack.query('up{job="srserve"}')
        if len(up) == 2 and all(s["value"][1] == "1" for s in up):
            break
        time.sleep(0.5)
    assert sorted(s["metric"]["instance"] for s in up) == sorted(r.url.removeprefix("http://") for r in stack.replicas)
    rules = httpx.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert names == {
        "SrserveHighLatencyP99",
        "SrserveErrorRatio",
        "SrserveQueueNearFull",
        "SrserveReplicaDown",
        "SrserveNotReady",
    }


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads((DEPLOY / "grafana" / "dashboards" / "srserve.json").read_text())
    out = []
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "1m").replace('"$instance"', '".+"')
            out.append((f"{panel['title']} / {t['legendFormat']}", expr))
    return out


@need_stack
def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    data = imagegen.encode(imagegen.rgb(50, 70))
    for replica in stack.replicas:  # traffic on each replica: successes and a rejection
        for model, scale in (("espcn", 2), ("deconv", 3), ("bicubic", 2)):
            assert upload(replica.url, data, model=model, scale=scale).status_code == 200
        assert upload(replica.url, data, model="nope").status_code == 422
    queries = dashboard_queries()
    assert len(queries) >= 20
    empty = [title for title, _ in queries]
    deadline = time.monotonic() + 30
    while empty and time.monotonic() < deadline:
        time.sleep(1)
        empty = [title for title, expr in queries if not stack.query(expr)]
    assert not empty, f"panels without data: {empty}"
