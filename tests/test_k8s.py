"""deploy/k8s: each overlay rendered by kubectl's kustomize, every object validated offline
against the Kubernetes 1.32 schemas, and the manifests checked against the service itself
(its routes, settings, metrics and image), so that a rename on either side fails here."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from srserve.service.admission import Priority
from srserve.service.app import create_app
from srserve.service.metrics import Metrics
from srserve.service.settings import Settings
from tests.conftest import REPO

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its kustomize) is not installed")
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["gpu", "cpu"]
KUBERNETES = "1.32.0"
# Custom resources: kubernetes-validate has no schema for them; their CRDs' published schemas,
# as kubernetes-models compiles them (npm, tests/k8s_crds), check them instead.
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject"}
CRD_CHECK = REPO / "tests" / "k8s_crds"
NODE = shutil.which("node")


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    done = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return tuple(yaml.safe_load_all(done.stdout))


def by_kind(overlay: str) -> dict[str, dict]:
    objects = rendered(overlay)
    kinds = {o["kind"]: o for o in objects}
    assert len(kinds) == len(objects), "one object of each kind"
    return kinds


def container(overlay: str) -> dict:
    (c,) = by_kind(overlay)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def env(overlay: str) -> dict[str, dict]:
    return {e["name"]: e for e in container(overlay)["env"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_every_part(overlay: str) -> None:
    assert set(by_kind(overlay)) == {"Deployment", "Service", "PodDisruptionBudget", *CUSTOM_KINDS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_kubernetes_1_32(overlay: str) -> None:
    checked = []
    for obj in rendered(overlay):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)  # strict: unknown fields fail
        checked.append(obj["kind"])
    assert sorted(checked) == ["Deployment", "PodDisruptionBudget", "Service"]


def validate_custom(objects: list[dict]) -> subprocess.CompletedProcess:
    if NODE is None or not (CRD_CHECK / "node_modules").is_dir():
        pytest.skip("the CRD schemas are not installed: `make test` runs npm ci in tests/k8s_crds")
    data = json.dumps(objects)
    return subprocess.run([NODE, "validate.mjs"], input=data, capture_output=True, text=True, cwd=CRD_CHECK)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crds(overlay: str) -> None:
    done = validate_custom(list(rendered(overlay)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(done.stdout.split()) == ["ScaledObject", "ServiceMonitor", "ok", "ok"]


def test_a_wrong_type_in_a_custom_resource_would_fail() -> None:
    objects = yaml.safe_load(yaml.safe_dump(list(rendered("gpu"))))
    for obj in objects:
        if obj["kind"] == "ScaledObject":
            obj["spec"]["minReplicaCount"] = "one"
    done = validate_custom(objects)
    assert done.returncode == 1 and "invalid ScaledObject: data/spec/minReplicaCount must be integer" in done.stdout


def test_a_misspelt_field_would_fail_validation() -> None:
    """The validation above can fail: a typo in a probe is refused."""
    deployment = yaml.safe_load(yaml.safe_dump(by_kind("gpu")["Deployment"]))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSecond"] = probe.pop("periodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_ports_are_the_services_own(overlay: str) -> None:
    c = container(overlay)
    (port,) = c["ports"]
    assert env(overlay)["SR_PORT"]["value"] == str(port["containerPort"])
    paths = set(create_app(Settings()).openapi()["paths"])
    probes = {name: c[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in paths and probe["port"] == port["name"]
    kinds = by_kind(overlay)
    service_port = kinds["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]
    monitor = kinds["ServiceMonitor"]["spec"]["endpoints"][0]
    assert monitor["port"] == service_port["name"] and monitor["path"] in paths
    annotations = kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] in paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_find_the_pods(overlay: str) -> None:
    kinds = by_kind(overlay)
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        kinds["Deployment"]["spec"]["selector"]["matchLabels"],
        kinds["Service"]["spec"]["selector"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    service_labels = kinds["Service"]["metadata"]["labels"]
    assert kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert kinds["ScaledObject"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert "replicas" not in kinds["Deployment"]["spec"]  # the autoscaler owns the count


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_are_real_and_the_key_comes_from_a_secret(overlay: str) -> None:
    variables = env(overlay)
    fields = Settings.model_fields
    for name in variables:
        assert name.startswith("SR_") and name[3:].lower() in fields, name
    values = {k[3:].lower(): v["value"] for k, v in variables.items() if "value" in v}
    Settings(**values)  # each value is one the service accepts
    secret = variables["SR_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "srserve-api-keys", "key": "keys"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_drain(overlay: str) -> None:
    pod = by_kind(overlay)["Deployment"]["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    variables = env(overlay)
    drain = float(variables["SR_DRAIN_SECONDS"]["value"])
    timeout = float(variables["SR_REQUEST_TIMEOUT_S"]["value"])
    # preStop, then SIGTERM: /readyz 503 for the drain, then queued requests finish within their timeout.
    assert pod["terminationGracePeriodSeconds"] >= float(command[1]) + drain + timeout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged(overlay: str) -> None:
    pod = by_kind(overlay)["Deployment"]["spec"]["template"]["spec"]
    user = re.search(r"useradd .*--uid (\d+) .*srserve", (REPO / "Dockerfile").read_text())
    assert user and pod["securityContext"]["runAsUser"] == int(user.group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert "requests" in pod["containers"][0]["resources"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaling_watches_the_predicted_queue_wait(overlay: str) -> None:
    spec = by_kind(overlay)["ScaledObject"]["spec"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    families = list(Metrics().registry.collect())
    exposed = {f.name for f in families} | {s.name for f in families for s in f.samples}
    names = re.findall(r"\bsrserve_[a-z_]+\b", query)
    assert names == ["srserve_predicted_wait_seconds"] and set(names) <= exposed
    for value in re.findall(r'priority="([a-z]+)"', query):
        assert value in {p.value for p in Priority}
    assert float(trigger["metadata"]["threshold"]) < Settings.model_fields["request_timeout_s"].default
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] > 0


def test_the_gpu_overlay_asks_for_one_gpu_and_the_cpu_overlay_for_none() -> None:
    gpu = container("gpu")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and env("gpu")["SR_DEVICE"]["value"] == "cuda"
    cpu_deployment = by_kind("cpu")["Deployment"]
    assert "nvidia.com" not in yaml.safe_dump(cpu_deployment)
    assert env("cpu")["SR_DEVICE"]["value"] == "cpu" and "tolerations" not in cpu_deployment["spec"]["template"]["spec"]
    assert container("cpu")["resources"]["requests"]["cpu"]
