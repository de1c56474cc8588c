"""Decoding uploads into model-ready pixels and encoding results, with limits.

Every colour image becomes ``(H, W, 3)`` pixels of uint8 (or uint16 for 16-bit
grey, kept 16-bit), plus an optional alpha plane that is upscaled on its own.
EXIF orientation is applied and the ICC profile carried to the output.
"""

from __future__ import annotations

import contextlib
import io
import warnings
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srserve.service.pixels import resize_plane

OutputFormat = Literal["png", "jpeg", "webp"]
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ORIENTATION = 0x0112  # the EXIF tag
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class ImageError(ValueError):
    """The upload cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422, reason: str = "bad_image") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass
class Decoded:
    """An upload ready for the model.

    Args:
        pixels: ``(H, W, 3)`` uint8, or uint16 for 16-bit grey (grey is replicated to 3 channels).
        alpha: ``(H, W)`` alpha plane of the same dtype, or None.
        grey: the source had one colour channel; encode back to grey.
        icc_profile: the source's ICC profile, carried to the output.
        source_format: Pillow's format name of the upload.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    grey: bool
    icc_profile: bytes | None
    source_format: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def max_value(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("the upload is empty; send an image file", reason="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
            w, h = image.size
            if w * h > max_pixels:
                raise ImageError(
                    f"input is {w}x{h} = {w * h} pixels; the limit is {max_pixels} input pixels",
                    reason="input_pixels",
                )
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"rejected as a decompression bomb: {e}", reason="decompression_bomb") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"not a readable image; accepted formats: {', '.join(INPUT_FORMATS)}", reason="bad_image"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt data
        raise ImageError(f"the image data is corrupt or truncated: {e}", reason="bad_image") from None
    return image


def peek_size(data: bytes, *, max_pixels: int) -> tuple[int, int] | None:
    """(H, W) as decoded (EXIF rotation applied) from the header alone, in microseconds; None when unknown.

    For admission before the decode: anything odd is left for :func:`decode` to report.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
            w, h = image.size
            turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception:
        return None
    if w * h > max_pixels or w < 1 or h < 1:
        return None
    return (w, h) if turned else (h, w)


def decode(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode an upload; raises :class:`ImageError` with a client-facing message."""
    image = _open(data, max_pixels)
    try:
        return _convert(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError) as e:
        # Opened and loaded, but Pillow cannot turn it into pixels (odd modes, broken palettes).
        raise ImageError(
            f"the image opened but could not be converted to pixels ({image.mode}): {e}", reason="bad_image"
        ) from None


def _convert(image: Image.Image) -> Decoded:
    source_format = image.format or "unknown"
    icc = image.info.get("icc_profile")
    # A broken EXIF block must not lose the image: keep it unrotated.
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "CMYK":
        image = image.convert("RGB")
        icc = None  # a CMYK profile does not describe the RGB result
    elif mode == "1":
        image = image.convert("L")
    elif mode == "LA" or mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode in ("YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "F":
        raise ImageError("32-bit float images are not supported; send 8-bit or 16-bit", reason="bad_mode")
    mode = image.mode

    if mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(image)
        if arr.dtype != np.uint16:
            if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
                raise ImageError("32-bit integer images are not supported; send 8-bit or 16-bit", reason="bad_mode")
            arr = arr.astype(np.uint16)
        return Decoded(np.repeat(arr[..., None], 3, axis=2), None, True, icc, source_format)
    if mode == "L":
        arr = np.asarray(image)
        return Decoded(np.repeat(arr[..., None], 3, axis=2), None, True, icc, source_format)
    if mode == "LA":
        arr = np.asarray(image)
        return Decoded(np.repeat(arr[..., :1], 3, axis=2), arr[..., 1].copy(), True, icc, source_format)
    if mode == "RGBA":
        arr = np.asarray(image)
        return Decoded(np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), False, icc, source_format)
    if mode != "RGB":
        image = image.convert("RGB")
    return Decoded(np.asarray(image), None, False, icc, source_format)


def _grey(pixels: np.ndarray) -> np.ndarray:
    """One channel back from the 3 the model wrote (their mean, rounded)."""
    if pixels.dtype == np.uint16:
        return np.round(pixels.astype(np.float32).mean(axis=2)).astype(np.uint16)
    return np.round(pixels.astype(np.float32).mean(axis=2)).astype(np.uint8)


def encode(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    *,
    grey: bool,
    fmt: OutputFormat,
    quality: int,
    icc_profile: bytes | None,
    png_compress_level: int = 1,
) -> bytes:
    """Encode the upscaled pixels (+ alpha) to ``fmt``, in memory (see :func:`encode_into`)."""
    out = io.BytesIO()
    encode_into(
        out,
        pixels,
        alpha,
        grey=grey,
        fmt=fmt,
        quality=quality,
        icc_profile=icc_profile,
        png_compress_level=png_compress_level,
    )
    return out.getvalue()


def encode_into(
    out: BinaryIO,
    pixels: np.ndarray | Image.Image,
    alpha: np.ndarray | None,
    *,
    grey: bool,
    fmt: OutputFormat,
    quality: int,
    icc_profile: bytes | None,
    png_compress_level: int = 1,
) -> None:
    """Encode the upscaled pixels (+ alpha) to ``fmt``, written to ``out``.

    PNG defaults to zlib level 1: on a GPU server encoding is the CPU's largest
    share of a request, and level 6 costs about twice the time for ~10% smaller files.
    ``pixels`` may already be a Pillow RGB image (8-bit colour, no alpha), which is
    written as it is; an array is let go as soon as Pillow holds its own copy:
    when the caller passed the last reference, a large output is not held twice.
    """
    if isinstance(pixels, Image.Image):
        if pixels.mode != "RGB" or alpha is not None or grey:
            raise ValueError("a Pillow image to encode must be RGB without alpha")
        _save(out, pixels, fmt=fmt, quality=quality, icc_profile=icc_profile, png_compress_level=png_compress_level)
        return
    if alpha is not None and fmt == "jpeg":
        raise ImageError(
            "the image has an alpha channel, which JPEG cannot hold; ask for format png or webp", reason="alpha_jpeg"
        )
    sixteen = pixels.dtype == np.uint16
    if sixteen and fmt != "png":
        # JPEG and WebP hold 8 bits: the format asked for decides the precision.
        pixels = np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
        sixteen = False
    if grey:
        plane = _grey(pixels)
        if sixteen:
            image = Image.fromarray(plane.astype(np.uint16))  # mode I;16
        elif alpha is not None:
            image = Image.fromarray(np.dstack([plane, alpha]), "LA")
        else:
            image = Image.fromarray(plane, "L")
    elif alpha is not None:
        image = Image.fromarray(np.dstack([pixels, alpha]), "RGBA")
    else:
        image = Image.fromarray(pixels, "RGB")
    del pixels, alpha  # Pillow has its own copy now
    if fmt == "webp" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    _save(out, image, fmt=fmt, quality=quality, icc_profile=icc_profile, png_compress_level=png_compress_level)


def _save(
    out: BinaryIO,
    image: Image.Image,
    *,
    fmt: OutputFormat,
    quality: int,
    icc_profile: bytes | None,
    png_compress_level: int,
) -> None:
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "jpeg":
        options.update(quality=quality, optimize=False)
    elif fmt == "webp":
        options.update(quality=quality, method=4)
    else:
        # zlib's run-length strategy: on photos and model output about 20-30% faster than the default
        # strategy at level 1, and no larger (Pillow passes compress_type to zlib as the strategy).
        options.update(compress_level=png_compress_level, compress_type=zlib.Z_RLE)
    image.save(out, format=fmt.upper(), **options)


def encode_result_into(
    out: BinaryIO,
    image: Decoded,
    pixels: np.ndarray | Image.Image,
    out_size: tuple[int, int],
    *,
    fmt: OutputFormat,
    quality: int,
    png_compress_level: int = 1,
) -> None:
    """The output file of ``image`` upscaled to ``out_size`` (H, W): the model's ``pixels``, the source's
    alpha plane upscaled on its own, and the source's ICC profile. ``pixels`` is let go early (see ``encode_into``)."""
    alpha = resize_plane(image.alpha, out_size) if image.alpha is not None else None
    encode_into(
        out,
        pixels,
        alpha,
        grey=image.grey,
        fmt=fmt,
        quality=quality,
        icc_profile=image.icc_profile,
        png_compress_level=png_compress_level,
    )
