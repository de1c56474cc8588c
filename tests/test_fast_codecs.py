"""The fast codecs give what the Pillow path gives: the same pixels, alpha, grey, 16 bits, ICC and orientation.

Every case decodes (or encodes) once through Pillow alone (``codecs=None``, the path
before the fast codecs) and once with each encoder choice, and compares.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from srserve.service import fast_codecs, imageio
from srserve.service.fast_codecs import FPNG_MAX_PIXELS, Codecs
from srserve.service.imageio import Decoded, ImageError, decode, encode, peek_size
from tests import imagegen

BIG = 10**8
CHOICES = [Codecs(png_encoder=e) for e in ("auto", "fpng", "zlib")]


class Recorder:
    def __init__(self) -> None:
        self.ops: list[str] = []

    def codecs(self, **kwargs: object) -> Codecs:
        return Codecs(on_fallback=self.ops.append, **kwargs)


def png_with_exif(image: Image.Image, turn: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = turn
    return imagegen.encode(image, "PNG", exif=exif)


def with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with one more chunk right after IHDR."""
    return data[:33] + fast_codecs.png_chunk(kind, body) + data[33:]


def before_iend(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with one more chunk after the pixels, where only a full decode finds it."""
    return data[:-12] + fast_codecs.png_chunk(kind, body) + data[-12:]


def uploads() -> dict[str, bytes]:
    rgb, icc = imagegen.rgb(21, 34), imagegen.srgb_profile()
    cases = {
        "png rgb": imagegen.encode(rgb),
        "png rgb icc": imagegen.encode(rgb, icc_profile=icc),
        "png rgba": imagegen.encode(imagegen.rgba(19, 30)),
        "png l": imagegen.encode(rgb.convert("L")),
        "png la": imagegen.encode(imagegen.rgba(19, 30).convert("LA")),
        "png i16": imagegen.encode(imagegen.grey16(17, 29)),
        "png gamma": with_chunk(imagegen.encode(rgb), b"gAMA", struct.pack(">I", 45455)),  # neither applies it
        "png palette": imagegen.encode(rgb.convert("P")),
        "png rgb transparency key": imagegen.encode(rgb, transparency=(1, 2, 3)),
        "jpeg rgb": imagegen.encode(rgb, "JPEG", quality=90),
        "jpeg rgb 444": imagegen.encode(rgb, "JPEG", quality=95, subsampling=0),
        "jpeg rgb 422": imagegen.encode(rgb, "JPEG", quality=80, subsampling=1),
        "jpeg progressive": imagegen.encode(rgb, "JPEG", progressive=True),
        "jpeg l": imagegen.encode(rgb.convert("L"), "JPEG"),
        "jpeg icc": imagegen.encode(rgb, "JPEG", icc_profile=icc),
        "jpeg cmyk": imagegen.encode(rgb.convert("CMYK"), "JPEG"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    cases["png exif after the pixels"] = before_iend(imagegen.encode(rgb), b"eXIf", exif.tobytes())
    cases["jpeg broken exif"] = imagegen.encode(rgb, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    for turn in range(1, 9):
        cases[f"jpeg orientation {turn}"] = imagegen.with_orientation(rgb, turn)
        cases[f"png orientation {turn}"] = png_with_exif(rgb, turn)
    return cases


def same(a: Decoded, b: Decoded) -> None:
    assert a.pixels.dtype == b.pixels.dtype and np.array_equal(a.pixels, b.pixels)
    assert (a.alpha is None) == (b.alpha is None)
    if a.alpha is not None:
        assert np.array_equal(a.alpha, b.alpha)
    assert (a.grey, a.icc_profile, a.source_format) == (b.grey, b.icc_profile, b.source_format)


#: Uploads the fast decoders must not take: Pillow converts them (palettes, keys, CMYK).
LEFT_TO_PILLOW = {"png palette", "png rgb transparency key", "jpeg cmyk"}
ORIENTATION_UNKNOWN = {"png exif after the pixels"}  # Pillow decodes it, and turns it


@pytest.mark.parametrize(("name", "data"), list(uploads().items()))
def test_fast_decode_gives_the_pillow_pixels(name: str, data: bytes) -> None:
    recorder = Recorder()
    same(decode(data, max_pixels=BIG, codecs=recorder.codecs()), decode(data, max_pixels=BIG))
    assert recorder.ops == []  # nothing fell back
    with Image.open(io.BytesIO(data)) as opened:
        assert (imageio._fast_mode(opened, data) is None) == (name in LEFT_TO_PILLOW)
        assert (imageio.orientation(opened, data) is None) == (name in ORIENTATION_UNKNOWN)


def test_a_broken_upload_falls_back_to_pillow_counted_and_gets_its_error() -> None:
    data = imagegen.encode(imagegen.rgb(40, 40))
    broken = data[:-60]  # the header is whole, the pixels are not
    recorder = Recorder()
    with pytest.raises(ImageError) as fast:
        decode(broken, max_pixels=BIG, codecs=recorder.codecs())
    with pytest.raises(ImageError) as pillow:
        decode(broken, max_pixels=BIG)
    assert recorder.ops == ["png_decode"]
    assert (fast.value.status, fast.value.reason, str(fast.value)) == (
        pillow.value.status,
        pillow.value.reason,
        str(pillow.value),
    )


def outputs() -> dict[str, tuple[np.ndarray, np.ndarray | None, bool]]:
    rng = np.random.default_rng(3)
    rgb = np.asarray(imagegen.scene(40, 56))
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    grey16 = np.repeat((np.asarray(imagegen.grey16(33, 47)))[..., None], 3, axis=2)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    return {
        "rgb": (rgb, None, False),
        "rgba": (rgb, alpha, False),
        "grey": (grey, None, True),
        "grey alpha": (grey, alpha, True),
        "grey 16-bit": (grey16, None, True),
    }


def pixels_of(data: bytes) -> tuple[str, np.ndarray, bytes | None]:
    with Image.open(io.BytesIO(data)) as im:
        return im.mode, np.asarray(im), im.info.get("icc_profile")


ENCODES = [
    (fmt, kind)
    for fmt in ("png", "jpeg", "webp")
    for kind, (_, alpha, _) in outputs().items()
    if not (fmt == "jpeg" and alpha is not None)
]


@pytest.mark.parametrize("codecs", CHOICES, ids=lambda c: c.png_encoder)
@pytest.mark.parametrize(("fmt", "kind"), ENCODES)
@pytest.mark.parametrize("icc", [None, "srgb"])
def test_fast_encode_decodes_to_the_pillow_pixels(codecs: Codecs, fmt: str, kind: str, icc: str | None) -> None:
    pixels, alpha, grey = outputs()[kind]
    profile = imagegen.srgb_profile() if icc else None
    kw = {"grey": grey, "fmt": fmt, "quality": 90, "icc_profile": profile}
    recorder = Recorder()
    fast = encode(pixels, alpha, **kw, codecs=recorder.codecs(png_encoder=codecs.png_encoder))
    pillow = encode(pixels, alpha, **kw)
    assert recorder.ops == []
    f_mode, f_pixels, f_icc = pixels_of(fast)
    p_mode, p_pixels, p_icc = pixels_of(pillow)
    assert f_icc == p_icc == profile
    assert f_mode == p_mode or {f_mode, p_mode} <= {"I;16", "I;16B", "I"}
    assert f_pixels.shape == p_pixels.shape and np.array_equal(f_pixels.astype(np.int64), p_pixels.astype(np.int64))


def png_chunks(data: bytes) -> list[bytes]:
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
        kinds.append(kind)
        at += 12 + length
    return kinds


@pytest.mark.parametrize("fpng", [True, False])
def test_png_icc_chunk_is_placed_and_alone(fpng: bool) -> None:
    rgb = np.asarray(imagegen.rgb(30, 40))
    data = fast_codecs.png_encode(rgb, level=1, icc_profile=imagegen.srgb_profile(), fpng=fpng)
    kinds = png_chunks(data)
    assert kinds[0] == b"IHDR" and kinds[1] == b"iCCP" and kinds.count(b"iCCP") == 1
    assert b"sRGB" not in kinds and b"gAMA" not in kinds  # iCCP excludes sRGB; neither encoder adds gAMA


def test_a_large_jpeg_profile_spans_app2_segments_in_order() -> None:
    profile = imagegen.srgb_profile() + bytes(range(256)) * 600  # ~150 KB: three segments
    data = fast_codecs.jpeg_encode(np.asarray(imagegen.rgb(16, 16)), quality=90, icc_profile=profile)
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["icc_profile"] == profile


def test_an_encoder_that_raises_falls_back_to_pillow_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:  # a fault injected: no real input makes them fail
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(fast_codecs, "png_encode", broken)
    recorder = Recorder()
    rgb = np.asarray(imagegen.rgb(30, 40))
    data = encode(rgb, None, grey=False, fmt="png", quality=90, icc_profile=None, codecs=recorder.codecs())
    assert recorder.ops == ["png_encode"] and np.array_equal(pixels_of(data)[1], rgb)


def test_fpng_only_where_it_pays() -> None:
    small = np.zeros((100, 100, 3), np.uint8)
    large = np.zeros((FPNG_MAX_PIXELS // 1000 + 1, 1000, 3), np.uint8)
    auto = Codecs(io_threads=2)
    assert auto.fpng_for(small, 1) and auto.fpng_for(small[..., :1].repeat(4, 2), 1)
    assert not auto.fpng_for(large, 1)  # it holds the GIL: the event loop would wait on it
    assert not auto.fpng_for(small, 6)  # a higher level asks for smaller files than fpng's
    assert not auto.fpng_for(small[..., 0], 1) and not auto.fpng_for(small.astype(np.uint16), 1)  # grey, 16-bit
    assert not Codecs(io_threads=16).fpng_for(small, 1)  # on many cores the GIL-free encoder scales
    assert Codecs(png_encoder="fpng", io_threads=16).fpng_for(large, 6)
    assert not Codecs(png_encoder="zlib").fpng_for(small, 1)


def test_peek_size_reads_the_header_alone() -> None:
    data = imagegen.encode(imagegen.rgb(40, 30))
    broken_pixels = data[:60] + bytes(len(data) - 60)  # IHDR whole, IDAT zeroed: decoding it would fail
    assert peek_size(broken_pixels, max_pixels=BIG) == (40, 30)
    turned = png_with_exif(imagegen.rgb(40, 30), 6)  # eXIf before IDAT (as Pillow writes it): no decode needed
    assert peek_size(turned, max_pixels=BIG) == (30, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    late = before_iend(data, b"eXIf", exif.tobytes())  # after the pixels: only decoding finds it
    assert peek_size(late, max_pixels=BIG) is None  # so admission waits for the decode
    assert decode(late, max_pixels=BIG, codecs=Codecs()).pixels.shape[:2] == (30, 40)  # Pillow's, turned


def test_gpu_jpeg_is_refused_clearly_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import torch

    from srserve.service import cli
    from srserve.service.gpu_jpeg import GpuJpeg, GpuJpegUnavailable

    with pytest.raises(GpuJpegUnavailable, match="SR_GPU_JPEG needs a CUDA device"):
        GpuJpeg(torch.device("cpu"))
    monkeypatch.setenv("SR_GPU_JPEG", "1")
    monkeypatch.setenv("SR_DEVICE", "cpu")
    assert cli.main(["serve", "--port", "1"]) == 2  # before it binds or loads anything
    assert "SR_GPU_JPEG needs a CUDA device" in capsys.readouterr().err
