"""Service settings, from ``SR_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from srserve.models import MODELS
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR
from srserve.service.fast_codecs import PngEncoder


def usable_cores() -> int:
    """The cores this process may run on (a cpuset or taskset narrows them), not all the host has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 2


class Settings(BaseSettings):
    """Everything an operator can tune; each field is ``SR_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SR_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 8000
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    weights_dir: Path = DEFAULT_WEIGHTS_DIR
    models: Annotated[list[str] | None, NoDecode] = Field(
        None, description="comma-separated built-in model names; default all (every file of models_dir is served)"
    )
    models_dir: Path | None = Field(
        None,
        description="a folder of community .safetensors files (spandrel-detected), each served under its stem;"
        " needs srserve[community]",
    )
    whole_max_pixels: int = Field(
        4_194_304,
        ge=4096,
        description="a network with a global reach runs an image whole up to this many LR pixels (its device "
        "memory budget); a larger image runs in overlapped windows of at most its square root, blended",
    )
    skip_bad_models: bool = Field(
        False, description="a file of models_dir that cannot be served is logged and left out instead of stopping"
    )
    precision: dict[str, Literal["fp32", "fp16", "bf16"]] = Field(
        default_factory=dict, description='per-model autocast on CUDA, JSON: {"espcn": "fp16"}'
    )
    auto_precision: bool = Field(
        True,
        description="on CUDA, models not in SR_PRECISION run fp16 or bf16 where warm-up measures their output"
        " within 50 dB PSNR of fp32's, else fp32",
    )
    tile_size: int = Field(
        1024, ge=16, description="largest LR window side; the planner cuts images into windows up to this"
    )
    buckets: bool = Field(
        True,
        description="windows of different uploads padded to shared shapes so that they batch, for models whose"
        " measured cost says batching pays (a GPU) and whose padding is exact; off: windows fit each image",
    )
    max_batch_tiles: int = Field(16, ge=1)
    max_batch_delay_ms: float = Field(5.0, ge=0)
    max_queue_wait_s: float = Field(
        3.0, gt=0, description="predicted queue wait beyond which new requests get 503 (low priority shed first)"
    )
    max_queue_tiles: int = Field(1024, ge=1, description="windows waiting before new requests get 503 (memory bound)")
    request_timeout_s: float = Field(120.0, gt=0, description="a request still unfinished by then gets 504")
    retry_after_s: int = Field(1, ge=1)
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_input_pixels: int = Field(4096 * 4096, ge=1)
    max_output_pixels: int = Field(8192 * 8192, ge=1)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated")
    io_threads: int = Field(
        default_factory=lambda: max(2, usable_cores()), ge=1, description="threads that decode and encode images"
    )
    cpu_lanes: int = Field(
        default_factory=usable_cores,
        ge=1,
        description="on a CPU, batches computed side by side under load (one per lane), the cores shared among"
        " them (1: one batch at a time on every core)",
    )
    worker_nice: int = Field(
        10, ge=0, le=19, description="nice added to compute and codec threads so the event loop answers first"
    )
    gil_switch_ms: float = Field(
        0.5,
        gt=0,
        le=100,
        description="GIL switch interval of the server process: how long the event loop may wait for the GIL"
        " behind compute threads (Python's default is 5)",
    )
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level of PNG output (1 fast, 9 small)")
    gpu_jpeg: bool = Field(
        False, description="decode and encode JPEG on the CUDA device (nvJPEG via torchvision); off: libjpeg-turbo"
    )
    png_encoder: PngEncoder = Field(
        "auto",
        description="auto: fpng for small 8-bit RGB(A) outputs on hosts of few I/O threads, else libpng;"
        " fpng, zlib (libpng) or pillow to force one (pillow: every codec through Pillow)",
    )
    warmup: bool = True
    drain_seconds: float = Field(2.0, ge=0, description="after SIGTERM, /readyz says 503 this long before closing")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object a line, for log shippers")

    @model_validator(mode="after")
    def _precision_names_served_learned_models(self) -> Settings:
        """A misspelt SR_PRECISION key would silently run that model in fp32: refuse it at start.

        Names of community models are known once their files are read: the model pool checks those."""
        if self.models_dir is not None:
            return self
        learned = MODELS.names("learned")
        served = [n for n in learned if self.models is None or n in self.models]
        wrong = sorted(set(self.precision) - set(served))
        if wrong:
            raise ValueError(f"SR_PRECISION names {wrong}, which are not served learned models; allowed: {served}")
        return self

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("models_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """``SR_MODELS_DIR=`` (as compose passes an unset variable) means no folder, not the working directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", "api_keys", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    """The process's settings; tests pass their own to ``create_app`` instead."""
    return Settings()
