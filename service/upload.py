"""Reading an upload: a multipart form with a file field ``image``, or the raw ``image/*`` bytes."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from srserve.service.errors import APIError


async def read_upload(request: Request, max_fields: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes and any extra form fields (at most ``max_fields``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        async with request.form(max_files=1, max_fields=max_fields) as form:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise APIError(
                    422, "missing_image", "the multipart form needs a file field named 'image'", field="image"
                )
            fields = {k: v for k, v in form.multi_items() if k != "image" and isinstance(v, str)}
            return await upload.read(), fields
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        # Not request.body(): it keeps a copy on the request for as long as the request lives.
        return b"".join([chunk async for chunk in request.stream()]), {}
    raise APIError(
        415,
        "unsupported_media_type",
        f"cannot read a body of type {content_type or '(none)'}",
        field="content-type",
        allowed=["multipart/form-data (field image)", "image/*"],
    )
