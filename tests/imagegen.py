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


def scene(h: int = 96, w: int = 128, factor: int = 3) -> Image.Image:
    """Hard edges, thin lines and text drawn ``factor`` times larger and shrunk (bicubic): the
    kind of low-resolution picture where an upscaler's difference from interpolation shows."""
    from PIL import ImageDraw

    big = Image.new("RGB", (w * factor, h * factor), (236, 232, 220))
    draw = ImageDraw.Draw(big)
    for i in range(0, w * factor, 9 * factor):
        draw.line([(i, 0), (i + h * factor // 2, h * factor)], fill=(40, 60, 120), width=factor)
    draw.ellipse([w * factor // 8, h * factor // 6, w * factor // 2, h * factor * 5 // 6], fill=(200, 60, 40))
    draw.rectangle([w * factor * 5 // 8, h * factor // 5, w * factor * 7 // 8, h * factor // 2], fill=(30, 140, 70))
    draw.text((w * factor * 9 // 16, h * factor * 3 // 5), "srserve", fill=(10, 10, 10), font_size=14 * factor)
    return big.resize((w, h), Image.Resampling.BICUBIC)
