"""Reduced precision per model, by measurement (service/precision.py): fp16 or bf16 only where the
8-bit answer stays within 50 dB of fp32's. The chooser runs here with torch's CPU autocast, the real
reduced-precision kernels; the CUDA warm-up that uses it is in tests/test_cuda.py."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler
from srserve.service import precision
from srserve.service.model_pool import ModelPool

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(scope="module")
def run_espcn():
    model = get_upsampler("espcn", 2, weights_dir=DEFAULT_WEIGHTS_DIR, device="cpu")[0]
    images = precision.probe_images()

    def run(p: str) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        cast = torch.autocast("cpu", dtype=DTYPES[p]) if p in DTYPES else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            y = model(x)
        return (y.float().clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()

    return run


def test_the_first_precision_within_the_tolerance_is_kept(run_espcn) -> None:
    chosen, scores = precision.choose(run_espcn)
    assert chosen == "fp16" and scores["fp16"] >= precision.MIN_PSNR_DB  # ESPCN: about 69 dB here
    assert list(scores) == ["fp16"]  # bf16 not needed


def test_out_of_tolerance_means_fp32(run_espcn) -> None:
    chosen, scores = precision.choose(run_espcn, min_psnr_db=99.0)
    assert chosen == "fp32" and list(scores) == ["fp16", "bf16"]
    assert scores["bf16"] < scores["fp16"]  # bf16 keeps 8 bits of mantissa, fp16 11


def test_non_finite_output_is_refused_and_the_next_is_tried(run_espcn) -> None:
    def nan_in_fp16(p: str) -> np.ndarray:
        out = run_espcn(p)
        return np.full_like(out, np.nan) if p == "fp16" else out

    chosen, scores = precision.choose(nan_in_fp16, min_psnr_db=30.0)
    assert scores["fp16"] == -math.inf and chosen == "bf16"


def test_models_named_in_sr_precision_are_not_measured() -> None:
    pool = ModelPool(
        device=torch.device("cpu"), weights_dir=DEFAULT_WEIGHTS_DIR, enabled=["espcn", "deconv"],
        precision={"deconv": "bf16"}, auto_precision=True,
    )  # fmt: skip
    pool.load()
    entries = {e.name: e for e in pool.entries()}
    assert entries["espcn"].auto_precision and entries["espcn"].precision == "fp32"  # until warm-up on CUDA
    assert not entries["deconv"].auto_precision and entries["deconv"].precision == "bf16"
