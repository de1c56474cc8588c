"""Encoded test images of every mode the service accepts."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

from tests.conftest import smooth_image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def rgb(h: int = 20, w: int = 24, seed: int = 0) -> Image.Image:
    return Image.fromarray(smooth_image(h, w, seed=seed))


def rgba(h: int = 20, w: int = 24) -> Image.Image:
    alpha = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    return Image.fromarray(np.dstack([smooth_image(h, w), alpha]), "RGBA")


def grey16(h: int = 20, w: int = 24) -> Image.Image:
    ramp = np.tile(np.linspace(0, 65535, w), (h, 1)).astype(np.uint16)
    return Image.fromarray(ramp)  # mode I;16


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)
