"""The encoded output of a request: spooled to disk past a size, answered whole or streamed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import numpy as np
from fastapi import Response
from fastapi.responses import StreamingResponse
from PIL import Image

from srserve.service.fast_codecs import Codecs
from srserve.service.imageio import Decoded, OutputFormat, encode_result_into

#: Encoded outputs up to this size stay in memory and go out in one piece; larger ones spill to disk.
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


def finish(
    image: Decoded,
    owned: list[np.ndarray | Image.Image],
    out_size: tuple[int, int],
    *,
    fmt: OutputFormat,
    quality: int,
    png_level: int,
    codecs: Codecs | None = None,
) -> tempfile.SpooledTemporaryFile:
    """Encode the output taken out of ``owned`` into a file that spills to disk past ``SPOOL_BYTES``.

    Taking the array out of the list leaves the encoder the last reference, so
    the stitched pixels are freed as soon as Pillow has its copy, and a large
    encoded file sits on disk rather than in a second buffer in memory.
    """
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by file_response
    try:
        encode_result_into(
            out,
            image,
            owned.pop(),
            out_size,
            fmt=fmt,
            quality=quality,
            png_compress_level=png_level,
            codecs=codecs,
        )
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def file_response(body: tempfile.SpooledTemporaryFile, media_type: str, headers: dict[str, str]) -> Response:
    """The encoded file as a response: in one piece when small, else streamed in chunks from disk."""
    size = body.seek(0, os.SEEK_END)
    body.seek(0)
    if size <= SPOOL_BYTES:
        with body:
            return Response(body.read(), media_type=media_type, headers=headers)

    def chunks() -> Iterator[bytes]:
        with body:
            while chunk := body.read(CHUNK_BYTES):
                yield chunk

    return StreamingResponse(chunks(), media_type=media_type, headers={**headers, "Content-Length": str(size)})
