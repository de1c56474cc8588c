"""The GPU JPEG path gathers the calls of all I/O threads into batched codec calls.

nvJPEG needs a device (tests/test_cuda.py runs it there); the gathering is the same
for any batched backend, so here it runs libjpeg-turbo's, one list per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from srserve.service import fast_codecs
from srserve.service.gpu_jpeg import Backend, GpuJpeg, GpuJpegUnavailable
from tests.conftest import smooth_image


def turbo() -> tuple[Backend, list[int]]:
    calls: list[int] = []

    def decode(datas: Sequence[bytes], grey: bool) -> list[np.ndarray]:
        calls.append(len(datas))
        if any(not d.startswith(b"\xff\xd8") for d in datas):
            raise ValueError("not a JPEG")
        return [fast_codecs.jpeg_decode(d) for d in datas]

    def encode(arrays: Sequence[np.ndarray], quality: int) -> list[bytes]:
        calls.append(len(arrays))
        return [fast_codecs.jpeg_encode(a, quality=quality, icc_profile=None) for a in arrays]

    return Backend(decode, encode), calls


def test_concurrent_calls_share_batches_and_get_their_own_answers() -> None:
    backend, calls = turbo()
    jpeg = GpuJpeg(torch.device("cpu"), backend=backend, max_delay_s=0.05)
    images = [smooth_image(32 + i, 40, seed=i) for i in range(12)]
    files = [fast_codecs.jpeg_encode(im, quality=95, icc_profile=None) for im in images]
    try:
        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(lambda f: jpeg.decode(f, grey=False), files))
            encoded = list(pool.map(lambda im: jpeg.encode(im, 90), images))
        for im, f, out, e in zip(images, files, got, encoded, strict=True):
            assert np.array_equal(out, fast_codecs.jpeg_decode(f))  # each caller its own image
            assert out.shape == im.shape and e == fast_codecs.jpeg_encode(im, quality=90, icc_profile=None)
        assert max(calls) > 1 and sum(calls) == 24  # batched, nothing run twice
    finally:
        jpeg.close()


def test_a_bad_file_fails_only_its_own_call() -> None:
    backend, _ = turbo()
    jpeg = GpuJpeg(torch.device("cpu"), backend=backend, max_delay_s=0.05)
    good = fast_codecs.jpeg_encode(smooth_image(16, 16), quality=90, icc_profile=None)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(jpeg.decode, d, False) for d in (good, b"junk", good)]
            assert futures[0].result().shape == futures[2].result().shape == (16, 16, 3)
            with pytest.raises(ValueError, match="not a JPEG"):
                futures[1].result()
    finally:
        jpeg.close()


def test_nvjpeg_is_refused_without_cuda() -> None:
    with pytest.raises(GpuJpegUnavailable, match="CUDA"):
        GpuJpeg(torch.device("cpu"))
