"""Large outputs are stitched once and streamed: the Pillow image the engine fills is
what the encoder reads, and an encoded file past the spool size goes out from disk."""

from __future__ import annotations

import asyncio
import io
import tempfile
import time

import numpy as np
from PIL import Image
from starlette.responses import StreamingResponse

from srserve.service.imageio import encode, encode_into
from srserve.service.output_file import SPOOL_BYTES, file_response
from tests.test_engine import Doubler, image, make_engine, route_for


def test_engine_stitches_8bit_rgb_into_a_pillow_image_equal_to_the_array() -> None:
    engine, route = make_engine(Doubler())  # windows of at most 16: this image is cut into several
    src = np.random.default_rng(0).integers(0, 256, (40, 27, 3), dtype=np.uint8)

    async def scenario() -> tuple:
        a = engine.submit(route_for(route, src), src, time.monotonic() + 5)
        b = engine.submit(route_for(route, src), src, time.monotonic() + 5, into_image=True)
        return await asyncio.gather(a.future, b.future)

    engine.start()
    as_array, as_image = asyncio.run(scenario())
    engine.stop(5)
    assert isinstance(as_image, Image.Image) and as_image.size == (54, 80)
    assert np.array_equal(np.asarray(as_image), as_array)
    assert np.array_equal(as_array, src.repeat(2, 0).repeat(2, 1))


def test_a_pillow_image_encodes_like_its_array() -> None:
    pixels = image(7, 20, 30)
    pixels[::3] = 200
    out = io.BytesIO()
    encode_into(out, Image.fromarray(pixels), None, grey=False, fmt="png", quality=90, icc_profile=b"")
    reference = encode(pixels, None, grey=False, fmt="png", quality=90, icc_profile=None)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(io.BytesIO(reference))))


def test_large_encoded_files_stream_from_disk_with_their_length() -> None:
    data = np.random.default_rng(1).bytes(SPOOL_BYTES + 12345)
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - file_response closes it
    body.write(data)
    response = file_response(body, "image/png", {"X-Model": "espcn"})
    assert isinstance(response, StreamingResponse)
    assert response.headers["content-length"] == str(len(data)) and response.headers["x-model"] == "espcn"

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.body_iterator])

    assert asyncio.run(collect()) == data
    assert body.closed


def test_small_encoded_files_go_out_in_one_piece() -> None:
    body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - file_response closes it
    body.write(b"png bytes")
    response = file_response(body, "image/png", {})
    assert not isinstance(response, StreamingResponse) and response.body == b"png bytes" and body.closed
