"""Decoding every accepted mode and format, limits, and encoding back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from srserve.service.imageio import ImageError, decode, encode
from tests import imagegen

BIG = 10**8


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_rgb_formats(fmt: str) -> None:
    d = decode(imagegen.encode(imagegen.rgb(), fmt), max_pixels=BIG)
    assert d.pixels.shape == (20, 24, 3) and d.pixels.dtype == np.uint8
    assert d.alpha is None and not d.grey and d.source_format == fmt


def test_rgba_keeps_alpha_apart() -> None:
    src = imagegen.rgba()
    d = decode(imagegen.encode(src), max_pixels=BIG)
    assert np.array_equal(d.alpha, np.asarray(src)[..., 3])
    assert np.array_equal(d.pixels, np.asarray(src)[..., :3])


def test_la_and_l_are_grey() -> None:
    la = imagegen.rgba().convert("LA")
    d = decode(imagegen.encode(la), max_pixels=BIG)
    assert d.grey and d.alpha is not None and np.array_equal(d.pixels[..., 0], d.pixels[..., 2])
    d = decode(imagegen.encode(imagegen.rgb().convert("L")), max_pixels=BIG)
    assert d.grey and d.alpha is None


def test_palette_with_and_without_transparency() -> None:
    p = imagegen.rgb().convert("P")
    assert decode(imagegen.encode(p), max_pixels=BIG).alpha is None
    p.info["transparency"] = 0
    assert decode(imagegen.encode(p, transparency=0), max_pixels=BIG).alpha is not None


def test_sixteen_bit_grey_stays_sixteen_bit() -> None:
    src = imagegen.grey16()
    d = decode(imagegen.encode(src), max_pixels=BIG)
    assert d.pixels.dtype == np.uint16 and d.grey and d.max_value == 65535
    assert np.array_equal(d.pixels[..., 0], np.asarray(src))
    data = encode(d.pixels, None, grey=True, fmt="png", quality=90, icc_profile=None)
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode.startswith("I") and np.array_equal(np.asarray(back), np.asarray(src))


def test_cmyk_becomes_rgb() -> None:
    d = decode(imagegen.encode(imagegen.rgb().convert("CMYK"), "JPEG"), max_pixels=BIG)
    assert d.pixels.shape[-1] == 3 and not d.grey


@pytest.mark.parametrize(("orientation", "shape"), [(1, (20, 24)), (6, (24, 20)), (8, (24, 20)), (3, (20, 24))])
def test_exif_orientation_is_applied(orientation: int, shape: tuple[int, int]) -> None:
    d = decode(imagegen.with_orientation(imagegen.rgb(), orientation), max_pixels=BIG)
    assert d.pixels.shape[:2] == shape


def test_icc_profile_is_carried_through() -> None:
    icc = imagegen.srgb_profile()
    d = decode(imagegen.encode(imagegen.rgb(), "PNG", icc_profile=icc), max_pixels=BIG)
    assert d.icc_profile == icc
    for fmt in ("png", "jpeg", "webp"):
        data = encode(d.pixels, None, grey=False, fmt=fmt, quality=90, icc_profile=d.icc_profile)
        with Image.open(io.BytesIO(data)) as back:
            assert back.info.get("icc_profile") == icc


def test_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageError, match="limit is 100 input pixels") as err:
        decode(imagegen.encode(imagegen.rgb()), max_pixels=100)
    assert err.value.reason == "input_pixels"


def test_decompression_bomb_is_refused() -> None:
    # 20k x 20k of one colour compresses to a few kB; Pillow's guard trips on it.
    bomb = imagegen.encode(Image.new("L", (20000, 20000)))
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError) as err:
        decode(bomb, max_pixels=10**12)
    assert err.value.reason == "decompression_bomb"


@pytest.mark.parametrize("data", [b"", b"not an image at all", imagegen.encode(imagegen.rgb())[:60]])
def test_garbage_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(ImageError) as err:
        decode(data, max_pixels=BIG)
    assert err.value.status == 422 and str(err.value)


def test_gif_is_not_accepted() -> None:
    with pytest.raises(ImageError, match="PNG, JPEG, WEBP, BMP, TIFF"):
        decode(imagegen.encode(imagegen.rgb(), "GIF"), max_pixels=BIG)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_alpha_round_trip(fmt: str) -> None:
    src = np.asarray(imagegen.rgba())
    data = encode(src[..., :3].copy(), src[..., 3].copy(), grey=False, fmt=fmt, quality=100, icc_profile=None)
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == "RGBA"


def test_jpeg_cannot_hold_alpha() -> None:
    src = np.asarray(imagegen.rgba())
    with pytest.raises(ImageError, match="png or webp"):
        encode(src[..., :3].copy(), src[..., 3].copy(), grey=False, fmt="jpeg", quality=90, icc_profile=None)


def test_a_failure_while_converting_an_opened_image_is_a_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow opened and loaded the file, then failed turning it into pixels: 422, not a server error."""
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "PNG")

    def broken(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        raise ValueError("conversion not supported")

    monkeypatch.setattr(Image.Image, "convert", broken)
    with pytest.raises(ImageError) as e:
        decode(buf.getvalue(), max_pixels=10_000)
    assert e.value.status == 422 and e.value.reason == "bad_image" and "converted" in str(e.value)


def heif_and_avif(image: Image.Image, fmt: str, **options: object) -> bytes:
    from srserve.service.imageio import register_plugins

    register_plugins()  # pillow-heif's HEIF writer; Pillow writes AVIF itself
    return imagegen.encode(image, fmt, quality=-1 if fmt == "HEIF" else 100, **options)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_and_web_formats_with_orientation_and_icc(fmt: str) -> None:
    """HEIC phone photos and AVIF: decoded upright, the ICC profile carried.

    AVIF keeps the EXIF orientation, turned here as for JPEG. HEIF rotates by its own
    ``irot`` box, which pillow-heif applies while decoding and then reports orientation 1
    (its writer drops the EXIF tag): upright either way, never turned twice.
    """
    src = imagegen.rgb(20, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn clockwise to view
    icc = imagegen.srgb_profile()
    d = decode(heif_and_avif(src, fmt, exif=exif, icc_profile=icc), max_pixels=BIG)
    assert d.source_format == fmt and d.icc_profile == icc and not d.grey
    turned = fmt == "AVIF"
    upright = np.asarray(src.transpose(Image.Transpose.ROTATE_270) if turned else src).astype(int)
    assert d.pixels.shape == upright.shape
    error = np.abs(d.pixels.astype(int) - upright).mean()
    assert error < 10  # lossy chroma (4:2:0) on a 20x32 image: close, not exact
    if turned:
        the_other_way = np.asarray(src.transpose(Image.Transpose.ROTATE_90)).astype(int)
        assert error < np.abs(d.pixels.astype(int) - the_other_way).mean() / 3


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_and_web_formats_broken_or_too_large_get_a_clear_error(fmt: str) -> None:
    data = heif_and_avif(imagegen.rgb(64, 64), fmt)
    with pytest.raises(ImageError) as e:
        decode(data[: len(data) // 2], max_pixels=BIG)
    assert e.value.status == 422 and e.value.reason == "bad_image"
    with pytest.raises(ImageError) as e:
        decode(data, max_pixels=1000)
    assert e.value.reason == "input_pixels"
