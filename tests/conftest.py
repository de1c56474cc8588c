"""Shared fixtures: tiny generated images, the shipped weights, the datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
WEIGHTS = REPO / "weights"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_data = pytest.mark.skip(reason=f"{DATASETS} is absent")
    no_cuda = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "dataset" in item.keywords and not DATASETS.is_dir():
            item.add_marker(no_data)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)


def smooth_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A uint8 test image with both smooth structure and texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = [128 + 90 * np.sin(x / (3 + c) + y / (5 + 2 * c) + c) * np.cos(y / (7 + c)) for c in range(channels)]
    img = np.stack(base, axis=-1) + rng.normal(0, 12, (h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder of 4 small RGB PNGs (HR side 48..64)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i, (h, w) in enumerate([(48, 64), (60, 52), (64, 64), (50, 60)]):
        Image.fromarray(smooth_image(h, w, seed=i)).save(folder / f"img{i}.png")
    return folder
