"""Prometheus metrics of one app instance, on its own registry (no globals).

Base units (seconds, bytes), low-cardinality labels: model name, status code,
rejection reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TILE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)


class DeviceMemoryCollector(Collector):
    """Memory in use on the device, read at scrape time (CUDA allocator, or process RSS on CPU)."""

    def __init__(self, device: Callable[[], torch.device]) -> None:
        self._device = device

    def collect(self) -> Iterator[GaugeMetricFamily]:
        device = self._device()
        family = GaugeMetricFamily(
            "srserve_device_memory_bytes", "Memory in use on the inference device", labels=["device", "kind"]
        )
        if device.type == "cuda":
            family.add_metric([str(device), "allocated"], float(torch.cuda.memory_allocated(device)))
            family.add_metric([str(device), "reserved"], float(torch.cuda.memory_reserved(device)))
        else:
            family.add_metric([str(device), "rss"], float(_rss_bytes()))
        yield family


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Metrics:
    """All of the service's metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Every response, counted by the access middleware. Labels stay bounded: route templates,
        # served model names (else "unknown", or "" off the upscale route), HTTP status codes.
        self.request_duration = Histogram(
            "srserve_request_duration_seconds",
            "Request latency, arrival to the last byte of the response",
            ["route", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "srserve_requests",
            "Responses, by route, model, priority, status code and status class (2xx, 4xx, 5xx)",
            ["route", "model", "priority", "status", "status_class"],
            registry=r,
        )
        self.rejections = Counter(
            "srserve_rejections", "Error responses (4xx and 5xx), by their error code", ["reason"], registry=r
        )
        self.queue_wait = Histogram(
            "srserve_queue_wait_seconds",
            "From enqueue to the first tile's batch starting",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_compute = Histogram(
            "srserve_batch_compute_seconds",
            "Device time of one batch (upload, model, download)",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        # rate() of it is the device's busy ratio: 1.0 means never idle between batches.
        self.device_busy = Counter(
            "srserve_device_busy_seconds",
            "Seconds the device spent on batches (CUDA: timed by events on its stream; CPU: the batch's call)",
            registry=r,
        )
        self.batch_tiles = Histogram(
            "srserve_batch_tiles", "Tiles per batch", ["model"], buckets=TILE_BUCKETS, registry=r
        )
        self.decode = Histogram("srserve_decode_seconds", "Image decoding", buckets=STEP_BUCKETS, registry=r)
        self.encode = Histogram(
            "srserve_encode_seconds", "Image encoding", ["format"], buckets=STEP_BUCKETS, registry=r
        )
        self.codec_fallbacks = Counter(
            "srserve_codec_fallbacks",
            "Fast decodes and encodes that raised and were redone by Pillow, by operation",
            ["op"],
            registry=r,
        )
        self.queued_tiles = Gauge("srserve_queued_tiles", "Tiles waiting for a batch", registry=r)
        self.queue_capacity = Gauge(
            "srserve_queue_capacity_tiles", "Queued tiles beyond which requests get 503", registry=r
        )
        self.inflight = Gauge("srserve_inflight_requests", "Upscale requests being handled", registry=r)
        self.batch_failures = Counter("srserve_batch_failures", "Batches that raised, by kind", ["kind"], registry=r)
        self.dropped_tiles = Counter(
            "srserve_dropped_tiles", "Tiles dropped uncomputed: client gone or deadline passed", ["reason"], registry=r
        )
        self.image_pixels = Counter(
            "srserve_image_pixels", "LR pixels of the images submitted to the model", ["model"], registry=r
        )
        self.computed_pixels = Counter(
            "srserve_computed_pixels",
            "LR pixels the model computes for them (windows overlap by their halos)",
            ["model"],
            registry=r,
        )
        self.predicted_wait = Gauge(
            "srserve_predicted_wait_seconds",
            "Predicted queue wait of a request arriving now, by priority (admission refuses above the limit)",
            ["priority"],
            registry=r,
        )
        self.answer_prediction = Histogram(
            "srserve_answer_prediction_ratio",
            "Real over predicted time from enqueue to the answer, per admitted request (1: admission is right)",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.max_queue_wait = Gauge(
            "srserve_max_queue_wait_seconds", "SR_MAX_QUEUE_WAIT_S: predicted wait beyond which 503", registry=r
        )
        self.ready = Gauge("srserve_ready", "1 when models are loaded and warm and not draining", registry=r)

    def watch_device(self, device: Callable[[], torch.device]) -> None:
        self.registry.register(DeviceMemoryCollector(device))
