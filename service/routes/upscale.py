"""POST /v1/upscale: decode -> queue tiles -> batched predict -> stitch -> encode."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srserve.service.admission import Ticket
from srserve.service.deps import ApiKeyDep, RuntimeDep
from srserve.service.engine import Priority, QueueFull
from srserve.service.errors import APIError, error_body, error_responses
from srserve.service.imageio import MEDIA_TYPES, Decoded, ImageError, decode, peek_size
from srserve.service.jobs import DeadlineExceeded, DeviceOutOfMemory, Job
from srserve.service.output_file import file_response, finish
from srserve.service.planner import Plan
from srserve.service.routing import RequestError, Route, check_name, default_scale, resolve
from srserve.service.runtime import Phase, Runtime
from srserve.service.settings import Settings
from srserve.service.shedding import refusal
from srserve.service.upload import read_upload

router = APIRouter(prefix="/v1", tags=["upscale"])
log = logging.getLogger("srserve.requests")
T = TypeVar("T")
DISCONNECT_POLL_S = 0.25


class UpscaleParams(BaseModel):
    """Query parameters (multipart form fields of the same names are accepted too)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("espcn", description="a name from GET /v1/models")
    scale: float | None = Field(
        None, gt=0, le=64, description="upscale factor (default 2 when no width/height; 1 for restoration models)"
    )
    restore: str | None = Field(
        None,
        description="a restoration model (dejpeg, denoise) run first, on the device, in the same job",
        max_length=64,
    )
    width: int | None = Field(None, ge=1, le=65536, description="target width; height follows the aspect if absent")
    height: int | None = Field(None, ge=1, le=65536, description="target height")
    format: Literal["png", "jpeg", "webp"] = Field("png", description="output format; alpha needs png or webp")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality")
    align_corners: bool | None = Field(None, description="bilinear/bicubic: corner-aligned grid")
    antialias: bool | None = Field(None, description="bilinear/bicubic: low-pass when shrinking (default: auto)")
    priority: Priority = Field(
        Priority.NORMAL, description="normal (interactive) goes first; low (batch jobs) waits and is shed first"
    )


PARAMETERS = sorted(UpscaleParams.model_fields)

REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image: a multipart form with a file field `image`, or the raw bytes as `image/*`",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in MEDIA_TYPES.values()},
        "description": "the upscaled image",
    },
    **error_responses(
        {
            400: "a malformed multipart body",
            401: "missing or invalid API key (only when the server has SR_API_KEYS)",
            413: "upload larger than SR_MAX_UPLOAD_BYTES",
            415: "neither multipart/form-data nor image/*",
            422: "bad parameter, unreadable image, or a pixel limit exceeded",
            503: "predicted wait too long, queue full, not ready, or out of device memory; see Retry-After",
            504: "still queued when the request's deadline passed",
        }
    ),
}


class ClientGone(Exception):
    pass


async def in_thread(runtime: Runtime, fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on the I/O threads, in this request's context (its log lines carry its ID)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(runtime.io, partial(context.run, fn, *args))


def merge_form_fields(params: UpscaleParams, fields: dict[str, str]) -> UpscaleParams:
    """Form fields are parameters too; a bad one is answered like a bad query parameter."""
    if not fields:
        return params
    try:
        return UpscaleParams.model_validate({**params.model_dump(exclude_unset=True), **fields})
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None


async def wait_for(job: Job, request: Request) -> np.ndarray | Image.Image:
    """The job's output; cancels it when the client leaves or the deadline passes."""
    while True:
        left = job.deadline - time.monotonic()
        if left <= 0:
            job.cancel()
            raise DeadlineExceeded("the request did not finish before its deadline")
        done, _ = await asyncio.wait({job.future}, timeout=min(DISCONNECT_POLL_S, left))
        if done:
            return job.future.result()
        if await request.is_disconnected():
            job.cancel()
            raise ClientGone


def tile_plan_header(routes: list[Route], plans: list[Plan]) -> str:
    """How the image was cut; for a chain, each model's cut in order."""
    if len(plans) == 1:
        return plans[0].describe()
    return "; then ".join(f"{r.entry.name}: {p.describe()}" for r, p in zip(routes, plans, strict=True))


def request_error(e: RequestError) -> APIError:
    code = "unknown_model" if e.field_name == "model" and e.allowed else "invalid_parameter"
    return APIError(422, code, str(e), field=e.field_name, allowed=e.allowed)


def restore_route(runtime: Runtime, size: tuple[int, int], name: str) -> Route:
    """The x1 restoration that runs before the upscaler."""
    pool = runtime.pool
    restorers = [n for n in pool.names if pool.catalog.get(n).task != "upscale" and pool.scales(n)]
    if name not in restorers:
        raise APIError(
            422,
            "invalid_parameter",
            f"restore={name!r} is not a restoration model this server has",
            field="restore",
            allowed=restorers,
        )
    try:
        return resolve(pool, name, in_size=size, scale=1)
    except RequestError as e:
        raise request_error(e) from None


def route_for(runtime: Runtime, size: tuple[int, int], params: UpscaleParams) -> list[Route]:
    """The routes an image of ``size`` (H, W) runs through, in order: the restoration asked for, then the model."""
    chain = [restore_route(runtime, size, params.restore)] if params.restore is not None else []
    scale = params.scale
    if scale is None and params.width is None and params.height is None:
        scale = default_scale(params.model, runtime.pool.catalog)
    try:
        route = resolve(
            runtime.pool,
            params.model,
            in_size=size,
            scale=scale,
            width=params.width,
            height=params.height,
            align_corners=params.align_corners,
            antialias=params.antialias,
        )
    except RequestError as e:
        raise request_error(e) from None
    out_h, out_w = route.out_size
    limit = runtime.settings.max_output_pixels
    if out_h * out_w > limit:
        raise APIError(
            422,
            "output_pixels",
            f"the output would be {out_w}x{out_h} = {out_w * out_h} pixels; the limit is {limit} output pixels",
            field="scale",
            limits={"max_output_pixels": limit},
        )
    return [*chain, route]


def stitch_into_image(image: Decoded, params: UpscaleParams, runtime: Runtime) -> bool:
    """Stitch the output into a Pillow image when Pillow will encode it (WebP, or every format with
    ``SR_PNG_ENCODER=pillow``), so that it exists once; the fast encoders read the array itself."""
    pillow_encodes = params.format == "webp" or not runtime.codecs.fast
    return pillow_encodes and image.pixels.dtype == np.uint8 and image.alpha is None and not image.grey


def check_alpha(image: Decoded, params: UpscaleParams) -> None:
    if image.alpha is not None and params.format == "jpeg":
        raise APIError(
            422,
            "alpha_needs_png_or_webp",
            "the image has an alpha channel, which JPEG cannot hold",
            field="format",
            allowed=["png", "webp"],
        )


@router.post(
    "/upscale",
    dependencies=[ApiKeyDep],
    response_class=Response,
    responses=RESPONSES,
    openapi_extra=REQUEST_BODY,
    summary="Upscale one image",
)
async def upscale(request: Request, params: Annotated[UpscaleParams, Query()], runtime: RuntimeDep) -> Response:
    # Counted, timed and logged by the access middleware; the state below labels its line.
    params = demoted(request, params)
    request.state.model = params.model
    request.state.priority = params.priority
    if not hasattr(request.state, "access"):
        request.state.access = {}
    runtime.metrics.inflight.inc()
    try:
        with runtime.engine.arriving() as queued:  # counted as on its way until queued (see Engine.arriving)
            return await _upscale(request, params, runtime, time.monotonic(), queued)
    except QueueFull as e:
        request.state.refused_retry_after = e.retry_after  # the admission gate remembers it (see shedding)
        raise refusal(e, runtime.engine.max_queue_wait_s) from None
    finally:
        runtime.metrics.inflight.dec()


def demoted(request: Request, params: UpscaleParams) -> UpscaleParams:
    """An early resend of a refused upload, held by the admission gate, goes in at low priority."""
    if getattr(request.state, "demoted", False) and params.priority is not Priority.LOW:
        return params.model_copy(update={"priority": Priority.LOW})
    return params


def admit_on_header(runtime: Runtime, data: bytes, params: UpscaleParams) -> Ticket | None:
    """Admit (or refuse, raising :class:`QueueFull`) on the size in the upload's header, before decoding it.

    None when the header gives no usable size or the parameters do not fit it: the
    decode and the checks after it then answer with the precise error.
    """
    size = peek_size(data, max_pixels=runtime.settings.max_input_pixels)
    if size is None:
        return None
    try:
        first, *then = route_for(runtime, size, params)
    except APIError:
        return None
    return runtime.engine.admit(first, *size, priority=params.priority, then=then)


async def _upscale(
    request: Request, params: UpscaleParams, runtime: Runtime, arrived: float, queued: Callable[[], None]
) -> Response:
    settings = runtime.settings
    engine = runtime.engine
    retry = {"Retry-After": str(settings.retry_after_s)}
    # While draining, requests the load balancer still sends are served: only /readyz says 503.
    if runtime.phase not in (Phase.READY, Phase.DRAINING):
        raise APIError(503, "not_ready", f"the server is {runtime.phase.value}; try again shortly", headers=retry)
    engine.check_wait(params.priority)  # before reading the upload (the admission gate has, too, for most)
    data, fields = await read_upload(request, max_fields=len(PARAMETERS) + 1)
    params = demoted(request, merge_form_fields(params, fields))
    request.state.model = params.model
    request.state.priority = params.priority
    try:
        check_name(runtime.pool, params.model)  # before paying for the decode
    except RequestError as e:
        raise request_error(e) from None
    ticket = admit_on_header(runtime, data, params)  # a refusal costs no decode
    try:
        return await _decoded(request, params, runtime, arrived, queued, data, ticket)
    finally:
        if ticket is not None:
            engine.release(ticket)  # a no-op once queued


async def decode_upload(runtime: Runtime, data: bytes) -> tuple[Decoded, float]:
    """The decoded upload and the seconds its decode took; a bad image is a 4xx."""
    settings = runtime.settings
    t0 = time.monotonic()
    try:
        image = await in_thread(
            runtime, partial(decode, data, max_pixels=settings.max_input_pixels, codecs=runtime.codecs)
        )
    except ImageError as e:
        limits = {"max_input_pixels": settings.max_input_pixels} if e.reason == "input_pixels" else None
        raise APIError(e.status, e.reason, str(e), field="image", limits=limits) from None
    decode_s = time.monotonic() - t0
    runtime.metrics.decode.observe(decode_s)
    return image, decode_s


async def output_of(job: Job, request: Request, settings: Settings) -> np.ndarray | Image.Image:
    """The job's output pixels, or the error answer for why there are none."""
    try:
        return await wait_for(job, request)
    except DeadlineExceeded:
        raise APIError(
            504,
            "deadline_exceeded",
            f"not finished within SR_REQUEST_TIMEOUT_S = {settings.request_timeout_s:g} s",
            limits={"request_timeout_s": settings.request_timeout_s},
        ) from None
    except DeviceOutOfMemory as e:
        raise APIError(
            503, "device_out_of_memory", str(e), headers={"Retry-After": str(settings.retry_after_s)}
        ) from None
    except ClientGone:
        raise
    except Exception as e:
        raise APIError(500, "inference_failed", f"the model failed on this batch: {type(e).__name__}") from None


async def _decoded(
    request: Request,
    params: UpscaleParams,
    runtime: Runtime,
    arrived: float,
    queued: Callable[[], None],
    data: bytes,
    ticket: Ticket | None,
) -> Response:
    settings = runtime.settings
    engine = runtime.engine
    image, decode_s = await decode_upload(runtime, data)
    del data
    first, *then = route_for(runtime, (image.height, image.width), params)
    check_alpha(image, params)
    route = then[-1] if then else first  # the one whose output is answered
    request.state.access.update(
        {
            "in_size": f"{image.width}x{image.height}",
            "out_size": f"{route.out_size[1]}x{route.out_size[0]}",
            "scale": round(route.out_size[1] / image.width, 4),
            "format": params.format,
            **({"restore": params.restore} if params.restore else {}),
        }
    )
    job = engine.submit(
        first,
        image.pixels,
        arrived + settings.request_timeout_s,
        priority=params.priority,
        arrived=queued,
        into_image=stitch_into_image(image, params, runtime),
        then=then,
        ticket=ticket,
    )
    image = replace(image, pixels=image.pixels[:0, :0])  # the job holds the input now, until it is done
    try:
        pixels = await output_of(job, request, settings)
    except ClientGone:  # nobody reads this; nginx's code for "client closed", counted and logged as such
        return JSONResponse(error_body("client_gone", "the client closed the connection"), status_code=499)

    queue_s, compute_s, plans, receipt = job.queue_s, job.compute_s, job.plans, job.receipt()
    del job  # from here the output is held by ``owned`` alone, and let go once Pillow has its copy
    owned = [pixels]
    del pixels
    t1 = time.monotonic()
    encode = partial(
        finish,
        fmt=params.format,
        quality=params.quality,
        png_level=settings.png_compress_level,
        codecs=runtime.codecs,
    )
    body = await in_thread(runtime, encode, image, owned, route.out_size)
    encode_s = time.monotonic() - t1
    runtime.metrics.encode.labels(params.format).observe(encode_s)
    ratio = engine.observe_answer(receipt)  # how long admitted requests really take
    request.state.access["predicted_s"] = round(receipt.prediction.answer_s, 4)
    request.state.access["answer_over_predicted"] = round(ratio, 3)
    timing = ", ".join(
        f"{name};dur={sec * 1000:.1f}"
        for name, sec in (("decode", decode_s), ("queue", queue_s), ("compute", compute_s), ("encode", encode_s))
    )
    out_h, out_w = route.out_size
    headers = {
        "Server-Timing": timing,
        "X-Output-Size": f"{out_w}x{out_h}",
        "X-Model": params.model,
        "X-Tile-Plan": tile_plan_header([first, *then], plans),
    }
    return file_response(body, MEDIA_TYPES[params.format], headers)
