"""Decoding uploads into model-ready pixels and encoding results, with limits.

Every colour image becomes ``(H, W, 3)`` pixels of uint8 (or uint16 for 16-bit
grey, kept 16-bit), plus an optional alpha plane that is upscaled on its own.
EXIF orientation is applied and the ICC profile carried to the output.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srserve.service import fast_codecs
from srserve.service.fast_codecs import Codecs
from srserve.service.pixels import resize_plane

OutputFormat = Literal["png", "jpeg", "webp"]
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")  # HEIF: HEIC phone photos
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("png", "jpeg", "webp")
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ORIENTATION = 0x0112  # the EXIF tag
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@functools.cache
def register_plugins() -> None:
    """HEIC/HEIF through pillow-heif (Pillow reads AVIF itself); once, when the first image is opened."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


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


@contextlib.contextmanager
def _image_errors() -> Iterator[None]:
    """Pillow's exceptions on opening or loading, as client-facing :class:`ImageError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
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


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The upload opened (its header read), its size checked; the pixels are not decoded yet."""
    if not data:
        raise ImageError("the upload is empty; send an image file", reason="empty")
    register_plugins()
    with _image_errors():
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
        w, h = image.size
        if w * h > max_pixels:
            raise ImageError(
                f"input is {w}x{h} = {w * h} pixels; the limit is {max_pixels} input pixels",
                reason="input_pixels",
            )
    return image


def orientation(image: Image.Image, data: bytes) -> int | None:
    """The EXIF orientation (1-8) from the header; None when only decoding would tell.

    Pillow's PNG ``getexif`` decodes the whole image when the ``eXIf`` chunk is not in
    the header (it may follow the pixels), so a PNG with one there is left unknown.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return None if png_has_chunk(data, b"eXIf") else 1
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except (OSError, ValueError, KeyError, TypeError, SyntaxError):  # a broken EXIF block: kept unrotated
        return 1
    return value if value in range(1, 9) else 1


def png_has_chunk(data: bytes, kind: bytes) -> bool:
    """Whether a chunk of ``kind`` is in the PNG, from the chunk headers alone (not a scan of the data)."""
    at = 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        found = data[at + 4 : at + 8]
        if found == kind:
            return True
        if found == b"IEND":
            return False
        at += 12 + length
    return False


def peek_size(data: bytes, *, max_pixels: int) -> tuple[int, int] | None:
    """(H, W) as decoded (EXIF rotation applied) from the header alone, in microseconds; None when unknown.

    For admission before the decode (on the event loop): anything odd is left for :func:`decode` to report.
    """
    register_plugins()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
            w, h = image.size
            turn = orientation(image, data)
    except Exception:
        return None
    if turn is None or w * h > max_pixels or w < 1 or h < 1:
        return None
    return (w, h) if turn in (5, 6, 7, 8) else (h, w)


def decode(data: bytes, *, max_pixels: int, codecs: Codecs | None = None) -> Decoded:
    """Decode an upload; raises :class:`ImageError` with a client-facing message.

    With ``codecs``, PNG and JPEG go through the fast decoders where the result is
    the one Pillow gives (see :func:`_fast_mode`); everything else, and a fast decode
    that raises (counted), through Pillow.
    """
    image = _open(data, max_pixels)
    fast = codecs is not None and codecs.fast and (mode := _fast_mode(image, data)) is not None
    if fast and (turn := orientation(image, data)) is not None:  # None: only Pillow's decode tells
        try:
            return _decode_fast(image, data, mode, turn, codecs)
        except Exception:  # a broken file, or one the fast decoder reads otherwise: Pillow decides
            codecs.on_fallback(f"{image.format.lower()}_decode")
    with _image_errors():
        image.load()
    try:
        return _convert(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError) as e:
        # Opened and loaded, but Pillow cannot turn it into pixels (odd modes, broken palettes).
        raise ImageError(
            f"the image opened but could not be converted to pixels ({image.mode}): {e}", reason="bad_image"
        ) from None


#: PNG (bit depth, colour type) the fast decoder reads as Pillow does, and Pillow's mode for them.
PNG_FAST_MODES = {(8, 0): "L", (8, 2): "RGB", (8, 4): "LA", (8, 6): "RGBA", (16, 0): "I;16"}
CHANNELS = {"L": 1, "I;16": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _fast_mode(image: Image.Image, data: bytes) -> str | None:
    """Pillow's mode for an upload the fast decoders read to the same pixels; None for the rest.

    Left to Pillow: palettes, transparency keys, bit depths below 8 and 16-bit colour
    (Pillow reduces those), animations and CMYK JPEG (and, in :func:`decode`, a PNG whose
    orientation is not in its header).
    """
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
        return image.mode
    if image.format != "PNG" or "transparency" in image.info or getattr(image, "is_animated", False):
        return None
    mode = PNG_FAST_MODES.get((data[24], data[25])) if len(data) > 25 else None
    return mode if mode == image.mode else None


def _decode_fast(image: Image.Image, data: bytes, mode: str, turn: int, codecs: Codecs) -> Decoded:
    if image.format == "PNG":
        arr = fast_codecs.png_decode(data)
    elif codecs.gpu_jpeg is not None:
        arr = codecs.gpu_jpeg.decode(data, grey=mode == "L")
    else:
        arr = fast_codecs.jpeg_decode(data)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    want = (image.height, image.width) + ((CHANNELS[mode],) if CHANNELS[mode] > 1 else ())
    if arr.shape != want or arr.dtype != (np.uint16 if mode == "I;16" else np.uint8):
        raise ValueError(f"the fast decoder gave {arr.shape} {arr.dtype}, Pillow {want} {mode}")
    return _from_array(oriented(arr, turn), mode, image.info.get("icc_profile"), image.format)


def oriented(arr: np.ndarray, turn: int) -> np.ndarray:
    """``ImageOps.exif_transpose`` on an ``(H, W[, C])`` array: EXIF orientation ``turn`` undone."""
    transposes = {
        2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
        3: lambda a: a[::-1, ::-1],  # ROTATE_180
        4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
        6: lambda a: np.rot90(a, -1),  # ROTATE_270 (counter-clockwise), a quarter turn clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # TRANSVERSE
        8: lambda a: np.rot90(a, 1),  # ROTATE_90
    }
    return np.ascontiguousarray(transposes[turn](arr)) if turn in transposes else arr


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
    if image.mode not in (*SIXTEEN_BIT_MODES, "L", "LA", "RGBA", "RGB"):
        image = image.convert("RGB")
    return _from_array(np.asarray(image), image.mode, icc, source_format)


def _from_array(arr: np.ndarray, mode: str, icc: bytes | None, source_format: str) -> Decoded:
    """The model's view of decoded pixels of a Pillow ``mode`` (grey to 3 channels, alpha apart)."""
    if mode in SIXTEEN_BIT_MODES:
        if arr.dtype != np.uint16:
            if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
                raise ImageError("32-bit integer images are not supported; send 8-bit or 16-bit", reason="bad_mode")
            arr = arr.astype(np.uint16)
        return Decoded(np.repeat(arr[..., None], 3, axis=2), None, True, icc, source_format)
    if mode == "L":
        return Decoded(np.repeat(arr[..., None], 3, axis=2), None, True, icc, source_format)
    if mode == "LA":
        return Decoded(np.repeat(arr[..., :1], 3, axis=2), arr[..., 1].copy(), True, icc, source_format)
    if mode == "RGBA":
        return Decoded(np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), False, icc, source_format)
    return Decoded(arr, None, False, icc, source_format)


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
    codecs: Codecs | None = None,
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
        codecs=codecs,
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
    codecs: Codecs | None = None,
) -> None:
    """Encode the upscaled pixels (+ alpha) to ``fmt``, written to ``out``.

    PNG defaults to zlib level 1: on a GPU server encoding is the CPU's largest
    share of a request, and level 6 costs about twice the time for ~10% smaller files.
    With ``codecs``, PNG and JPEG go through the fast encoders (see ``fast_codecs``),
    Pillow taking over when one raises; WebP, and everything without ``codecs``, through Pillow.
    ``pixels`` may already be a Pillow RGB image (8-bit colour, no alpha), which is
    written as it is; an array is let go as soon as the encoder holds its own copy:
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
        array, mode = (np.dstack([plane, alpha]), "LA") if alpha is not None else (plane, "I;16" if sixteen else "L")
    elif alpha is not None:
        array, mode = np.dstack([pixels, alpha]), "RGBA"
    else:
        array, mode = pixels, "RGB"
    del pixels, alpha  # the encoder holds its own copy from here
    if codecs is not None and codecs.fast and fmt != "webp":
        try:
            out.write(_encode_fast(array, fmt, quality, icc_profile, png_compress_level, codecs))
            return
        except Exception:  # nothing is written before the encoder returns: Pillow starts afresh
            codecs.on_fallback(f"{fmt}_encode")
    image = Image.fromarray(array) if mode == "I;16" else Image.fromarray(array, mode)
    del array
    if fmt == "webp" and image.mode in ("L", "LA"):
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
    _save(out, image, fmt=fmt, quality=quality, icc_profile=icc_profile, png_compress_level=png_compress_level)


def _encode_fast(
    array: np.ndarray, fmt: OutputFormat, quality: int, icc: bytes | None, level: int, codecs: Codecs
) -> bytes:
    if fmt == "jpeg" and codecs.gpu_jpeg is not None:
        data = codecs.gpu_jpeg.encode(array, quality)
        return fast_codecs.with_jpeg_icc(data, icc) if icc else data
    if fmt == "jpeg":
        return fast_codecs.jpeg_encode(array, quality=quality, icc_profile=icc)
    return fast_codecs.png_encode(array, level=level, icc_profile=icc, fpng=codecs.fpng_for(array, level))


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
    codecs: Codecs | None = None,
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
        codecs=codecs,
    )
