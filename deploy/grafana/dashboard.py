"""Writes deploy/grafana/dashboards/srserve.json (the dashboard as code).

    python deploy/grafana/dashboard.py          # regenerate
    python deploy/grafana/dashboard.py --check  # exit 1 if the JSON is stale

Every panel's queries filter on ``instance=~"$instance"``; the last row repeats
once per replica.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "srserve.json"
DS = {"type": "prometheus", "uid": "prometheus"}
I = 'instance=~"$instance"'  # noqa: E741 - the filter every query carries
R = "$__rate_interval"
API = 'route!~"/healthz|/readyz|/metrics"'  # API traffic: probes and scrapes would swamp the ratios
UPSCALE = ', route="/v1/upscale"'


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    unit: str = "short",
    kind: str = "timeseries",
    **options: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, **options.pop("defaults", {})}, "overrides": []},
        "options": options or {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull"]}},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
    }


def quantiles(metric: str, by: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99), extra: str = "") -> list:
    sel = f"{I}{extra}"
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{sel}}}[{R}])))", f"{legend}p{int(q * 100)}")
        for q in qs
    ]


def mean(metric: str) -> str:
    return f"sum(rate({metric}_sum{{{I}}}[{R}])) / sum(rate({metric}_count{{{I}}}[{R}]))"


def overview(y: int) -> list[dict[str, Any]]:
    req = f"srserve_requests_total{{{I}, {API}}}"
    return [
        panel(
            "Request rate by route, model and status",
            "Every API response per second (probes and scrapes left out), refusals before the handler included.",
            [(f"sum by (route, model, status) (rate({req}[{R}]))", "{{route}} {{model}} {{status}}")],
            (0, y, 12, 8),
            "reqps",
        ),
        panel(
            "Error ratio: 4xx and 5xx apart",
            "Share of API responses that are client mistakes (4xx: bad input, missing key, too large, shed) "
            "and failures to serve (5xx), then by route and status code.",
            [
                (
                    f'sum by (status_class) (rate(srserve_requests_total{{{I}, {API}, status_class=~"4xx|5xx"}}[{R}])) '
                    f"/ ignoring(status_class) group_left sum(rate({req}[{R}]))",
                    "{{status_class}}",
                ),
                (
                    f'sum by (route, status) (rate(srserve_requests_total{{{I}, {API}, status!~"2.."}}[{R}])) '
                    f"/ ignoring(route, status) group_left sum(rate({req}[{R}]))",
                    "{{route}} {{status}}",
                ),
            ],
            (12, y, 12, 8),
            "percentunit",
        ),
        panel(
            "Latency p50 / p95 / p99",
            "Request duration, arrival to response, all models.",
            quantiles("srserve_request_duration_seconds", "", extra=UPSCALE),
            (0, y + 8, 12, 8),
            "s",
        ),
        panel(
            "Latency p99 by model",
            "Which model is slow.",
            quantiles("srserve_request_duration_seconds", "model", (0.99,), extra=UPSCALE),
            (12, y + 8, 12, 8),
            "s",
        ),
        panel(
            "Queue wait against compute",
            "p95 of the wait for a batch against the device time of one batch, with decode and encode: "
            "queue wait above compute means too few replicas.",
            [
                *quantiles("srserve_queue_wait_seconds", "", (0.5, 0.95)),
                *[(e, f"compute {leg}") for e, leg in quantiles("srserve_batch_compute_seconds", "", (0.5, 0.95))],
                (mean("srserve_decode_seconds"), "decode mean"),
                (mean("srserve_encode_seconds"), "encode mean"),
            ],
            (0, y + 16, 12, 8),
            "s",
        ),
        panel(
            "Tiles per batch",
            "How full batches are: near SR_MAX_BATCH_TILES under load, 1 when idle.",
            [
                (
                    f"sum by (model) (rate(srserve_batch_tiles_sum{{{I}}}[{R}])) "
                    f"/ sum by (model) (rate(srserve_batch_tiles_count{{{I}}}[{R}]))",
                    "{{model}} mean",
                ),
                *quantiles("srserve_batch_tiles", "model", (0.95,)),
            ],
            (12, y + 16, 12, 8),
        ),
        panel(
            "Queued tiles and in-flight requests",
            "Work waiting, against the queue's capacity (503 above it).",
            [
                (f"sum(srserve_queued_tiles{{{I}}})", "queued tiles"),
                (f"sum(srserve_queue_capacity_tiles{{{I}}})", "capacity"),
                (f"sum(srserve_inflight_requests{{{I}}})", "in-flight requests"),
            ],
            (0, y + 24, 8, 8),
        ),
        panel(
            "Rejections by reason",
            "Requests refused: queue_wait (predicted wait over the limit), queue_full, deadline, limits, "
            "bad input, client_gone.",
            [(f"sum by (reason) (rate(srserve_rejections_total{{{I}}}[{R}]))", "{{reason}}")],
            (8, y + 24, 8, 8),
            "reqps",
        ),
        panel(
            "Device memory",
            "CUDA memory allocated and reserved (process RSS on CPU replicas).",
            [
                (
                    f"sum by (instance, device, kind) (srserve_device_memory_bytes{{{I}}})",
                    "{{instance}} {{device}} {{kind}}",
                )
            ],
            (16, y + 24, 8, 8),
            "bytes",
        ),
        panel(
            "Predicted queue wait against the limit",
            "What a request arriving now would wait, by priority (low waits behind normal). Above the limit "
            "requests are refused with 503 queue_wait: low priority first.",
            [
                (f"max by (priority) (srserve_predicted_wait_seconds{{{I}}})", "{{priority}}"),
                (f"max(srserve_max_queue_wait_seconds{{{I}}})", "limit (SR_MAX_QUEUE_WAIT_S)"),
            ],
            (0, y + 32, 8, 8),
            "s",
        ),
        panel(
            "Answered and shed by priority",
            "Requests per second by priority and status: under overload batch jobs (low) get 503 first.",
            [(f"sum by (priority, status) (rate({req}[{R}]))", "{{priority}} {{status}}")],
            (8, y + 32, 8, 8),
            "reqps",
        ),
        panel(
            "Computed pixels per image pixel",
            "How much the window halos cost: LR pixels the model computes over the images' own (at most 1.10).",
            [
                (
                    f"sum by (model) (rate(srserve_computed_pixels_total{{{I}}}[{R}])) "
                    f"/ sum by (model) (rate(srserve_image_pixels_total{{{I}}}[{R}]))",
                    "{{model}}",
                )
            ],
            (16, y + 32, 8, 8),
        ),
        panel(
            "Real against predicted time to answer",
            "Each answered request's real time from admission to answer over what admission predicted. "
            "Near 1: refusals are judged on the truth. Above 1: what is admitted comes late; below: "
            "load is refused that could have been served.",
            [
                (
                    f"histogram_quantile({q}, sum by (le) (rate(srserve_answer_prediction_ratio_bucket{{{I}}}[{R}])))",
                    f"p{int(q * 100)}",
                )
                for q in (0.05, 0.5, 0.95)
            ],
            (0, y + 40, 12, 8),
            "short",
        ),
        panel(
            "Device busy ratio",
            "Share of the time each replica's device spends on batches (CUDA: timed by events on its stream). "
            "Near 1 under load: the host keeps it fed; well below 1 while requests queue: the host "
            "(decode, paste, encode) is the bottleneck, and more CPU per GPU would pay.",
            [(f"sum by (instance) (rate(srserve_device_busy_seconds_total{{{I}}}[{R}]))", "{{instance}}")],
            (12, y + 40, 12, 8),
            "percentunit",
        ),
    ]


def replica_row(y: int) -> list[dict[str, Any]]:
    row = {
        "type": "row",
        "title": "Replica $instance",
        "collapsed": False,
        "repeat": "instance",
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }
    stat = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background"}
    return [
        row,
        panel(
            "Up and ready",
            "1: scraped and ready; 0: down, loading or draining.",
            [(f'up{{job="srserve", {I}}}', "scraped"), (f"srserve_ready{{{I}}}", "ready")],
            (0, y + 1, 4, 6),
            "short",
            "stat",
            **stat,
        ),
        panel(
            "Requests",
            "This replica's API request rate by status class.",
            [(f"sum by (status_class) (rate(srserve_requests_total{{{I}, {API}}}[{R}]))", "{{status_class}}")],
            (4, y + 1, 7, 6),
            "reqps",
        ),
        panel(
            "Latency p99",
            "This replica's p99 request duration.",
            quantiles("srserve_request_duration_seconds", "", (0.99,), extra=UPSCALE),
            (11, y + 1, 5, 6),
            "s",
        ),
        panel(
            "Queue",
            "Queued tiles and in-flight requests on this replica.",
            [(f"srserve_queued_tiles{{{I}}}", "queued tiles"), (f"srserve_inflight_requests{{{I}}}", "in flight")],
            (16, y + 1, 4, 6),
        ),
        panel(
            "Memory",
            "Device memory of this replica.",
            [(f"srserve_device_memory_bytes{{{I}}}", "{{kind}}")],
            (20, y + 1, 4, 6),
            "bytes",
        ),
    ]


def dashboard() -> dict[str, Any]:
    panels = [
        {
            "type": "row",
            "title": "All replicas",
            "collapsed": False,
            "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
            "panels": [],
        }
    ]
    panels += overview(1)
    panels += replica_row(49)
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": "srserve",
        "title": "srserve",
        "description": "Super-resolution service: traffic, latency, batching, queue and memory, per replica.",
        "tags": ["srserve"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "label": "Replica",
                    "type": "query",
                    "datasource": DS,
                    "query": {"query": 'label_values(up{job="srserve"}, instance)', "refId": "instance"},
                    "definition": 'label_values(up{job="srserve"}, instance)',
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".+",
                    "sort": 1,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        sys.exit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
