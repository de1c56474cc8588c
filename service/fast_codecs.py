"""The fast codecs, chosen by measurement (bench/codecs.py), with Pillow the fallback for the rest.

- PNG encode: fpng for 8-bit RGB/RGBA (about 10x Pillow's speed, files 6-38% larger) where
  it pays; it holds the GIL, so only where few I/O threads share it and the output is
  small enough that the event loop is not held up. Otherwise libpng through imagecodecs,
  Paeth filter and zlib's run-length strategy (about 2x Pillow's level 1, the same
  size, the GIL released): grey, grey + alpha and 16-bit grey too.
- JPEG encode and decode, PNG decode: libjpeg-turbo and libpng through imagecodecs
  (1.4-1.8x Pillow, the GIL released; the same pixels, checked in tests).
- ICC profiles are written by hand (PNG ``iCCP``, JPEG ``APP2``): neither encoder takes one.

Every function here returns the same pixels as the Pillow path in ``imageio``; a
caller falls back to Pillow when one raises (counted in ``srserve_codec_fallbacks_total``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import imagecodecs
import numpy as np
from fpng import fpng_ext

if TYPE_CHECKING:  # torch stays out of the codecs' import
    from srserve.service.gpu_jpeg import GpuJpeg

PngEncoder = Literal["auto", "fpng", "zlib", "pillow"]

#: fpng holds the GIL: above this many I/O threads the GIL-free encoder on every core wins
#: (fpng ~120 MP/s on one core against libpng's ~25 MP/s on each; bench/codecs.py).
FPNG_MAX_IO_THREADS = 4
#: fpng takes ~4-10 ms per megapixel holding the GIL: up to 2048x2048, the event loop waits
#: at most ~15-40 ms behind one encode.
FPNG_MAX_PIXELS = 2048 * 2048

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IHDR_END = 8 + 8 + 13 + 4  # signature, then IHDR's length + type, 13 bytes of data, CRC
JPEG_ICC_MARKER = b"ICC_PROFILE\x00"
JPEG_ICC_CHUNK = 65519  # an APP2 segment's 65535 bytes, less its length, marker and sequence bytes


@dataclass(frozen=True)
class Codecs:
    """Which encoders a server uses, and where a fast path's failure is counted.

    ``png_encoder``: ``auto`` (fpng where it pays, else libpng), ``fpng`` (for 8-bit
    RGB/RGBA whatever the size), ``zlib`` (libpng only), ``pillow`` (Pillow for everything).
    """

    png_encoder: PngEncoder = "auto"
    io_threads: int = 2
    on_fallback: Callable[[str], None] = lambda op: None
    gpu_jpeg: GpuJpeg | None = None  # nvJPEG for JPEG in and out (SR_GPU_JPEG; service/gpu_jpeg.py)

    @property
    def fast(self) -> bool:
        return self.png_encoder != "pillow"

    def fpng_for(self, pixels: np.ndarray, level: int) -> bool:
        """fpng for these PNG pixels? It has one fixed compression, about zlib level 1's."""
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            return False
        if self.png_encoder == "fpng":
            return True
        small = pixels.shape[0] * pixels.shape[1] <= FPNG_MAX_PIXELS
        return self.png_encoder == "auto" and level <= 1 and small and self.io_threads <= FPNG_MAX_IO_THREADS


def png_encode(pixels: np.ndarray, *, level: int, icc_profile: bytes | None, fpng: bool) -> bytes:
    """``(H, W)`` grey (8 or 16 bit), ``(H, W, 2)`` grey + alpha, ``(H, W, 3|4)`` RGB(A) to PNG."""
    if fpng:
        data = fpng_ext.encode_ndarray(np.ascontiguousarray(pixels))
    else:
        data = imagecodecs.png_encode(
            pixels, level=level, strategy=imagecodecs.PNG.STRATEGY.RLE, filter=imagecodecs.PNG.FILTER.PAETH
        )
    return with_png_icc(data, icc_profile) if icc_profile else data


def jpeg_encode(pixels: np.ndarray, *, quality: int, icc_profile: bytes | None) -> bytes:
    """``(H, W, 3)`` RGB or ``(H, W)`` grey to baseline JPEG, as Pillow writes it (4:2:0, no optimize)."""
    data = imagecodecs.jpeg8_encode(pixels, level=quality)
    return with_jpeg_icc(data, icc_profile) if icc_profile else data


def png_decode(data: bytes) -> np.ndarray:
    return imagecodecs.png_decode(data)


def jpeg_decode(data: bytes) -> np.ndarray:
    return imagecodecs.jpeg8_decode(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_png_icc(data: bytes, icc_profile: bytes) -> bytes:
    """The PNG with an ``iCCP`` chunk right after ``IHDR`` (it must precede ``PLTE`` and ``IDAT``)."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG that starts with IHDR")
    iccp = png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))  # name, NUL, method 0 (zlib)
    return data[:IHDR_END] + iccp + data[IHDR_END:]


def with_jpeg_icc(data: bytes, icc_profile: bytes) -> bytes:
    """The JPEG with the profile in ``APP2 ICC_PROFILE`` segments after SOI and the JFIF ``APP0``."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    at = 2
    if data[2:4] == b"\xff\xe0":  # JFIF APP0 stays first
        at = 4 + struct.unpack(">H", data[4:6])[0]
    chunks = [icc_profile[i : i + JPEG_ICC_CHUNK] for i in range(0, len(icc_profile), JPEG_ICC_CHUNK)]
    if len(chunks) > 255:
        raise ValueError("an ICC profile over 255 APP2 segments")
    segments = b"".join(
        b"\xff\xe2"
        + struct.pack(">H", 2 + len(JPEG_ICC_MARKER) + 2 + len(c))
        + JPEG_ICC_MARKER
        + bytes([i, len(chunks)])
        + c
        for i, c in enumerate(chunks, start=1)
    )
    return data[:at] + segments + data[at:]
