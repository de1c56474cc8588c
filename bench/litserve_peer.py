"""The peer: a plain LitServe 0.2.19 server on the same weights, as a user would write one.

    python -m bench.litserve_peer --port 8001 --model espcn --scale 2

decode (a PNG, base64 in JSON: LitServe hands requests to its worker process by
pickling, and a multipart form's open file does not pickle) -> batch (LitServe's
own dynamic batching: ``max_batch_size``, ``batch_timeout``) -> predict -> encode
(PNG at zlib level 1 with the run-length strategy, as srserve). Batches of equal shapes are stacked; a batch
of mixed shapes runs image by image, since ``torch.stack`` cannot mix them.
Bench-only: the service never imports litserve.
"""

from __future__ import annotations

import argparse
import base64
import io
import zlib

import litserve as ls
import numpy as np
import torch
from fastapi import Response
from PIL import Image

from srserve.models.allocator import keep_large_allocations
from srserve.models.catalog import DEFAULT_WEIGHTS_DIR, get_upsampler


class UpscaleAPI(ls.LitAPI):
    def __init__(self, model: str, scale: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.model_name, self.scale = model, scale

    def setup(self, device: str) -> None:
        keep_large_allocations()  # the allocator setting srserve uses: compared here is the serving, not malloc
        self.model, _ = get_upsampler(self.model_name, self.scale, weights_dir=DEFAULT_WEIGHTS_DIR, device=device)
        self.torch_device = torch.device(device)

    def decode_request(self, request: dict) -> np.ndarray:
        data = base64.b64decode(request["image"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # stacked per shape in predict

    def _run(self, images: list[np.ndarray]) -> list[np.ndarray]:
        x = torch.from_numpy(np.stack(images)).to(self.torch_device).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            y = self.model(x)
        y = (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(y)

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if len({im.shape for im in images}) == 1:
            return self._run(images)
        return [self._run([im])[0] for im in images]

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> Response:
        buf = io.BytesIO()
        Image.fromarray(output).save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)  # as srserve
        return Response(content=buf.getvalue(), media_type="image/png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="litserve_peer", description=__doc__)
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--model", default="espcn")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    api = UpscaleAPI(args.model, args.scale, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator=args.accelerator, timeout=600)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
