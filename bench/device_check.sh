#!/usr/bin/env bash
# One prepared run on a lent GPU machine (about 10 minutes; estimated, never run): the tests marked
# `cuda`, then ESPCN x2 on 256x256 uploads against LitServe on the same weights and device
# (bench/compare.py: the host-path comparison where the model is almost free), then ESPCN x4 on
# 960x540 uploads (3840x2160 out) against the model alone on whole images, fp32 and fp16, and the
# batching gain at concurrency 32 against SR_MAX_BATCH_TILES=1, then GPU JPEG (bench/gpu_jpeg.py)
# and the simulated accelerator's constants against the real device (bench/sim_vs_real.py), then
# shape buckets against exact-fit windows on mixed sizes (bench/gpu_batching.py --device cuda).
# That machine has torch, pillow and prometheus-client but not the web stack: carry the wheels in .whl (see the
# device tool's README):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#     fastapi starlette uvicorn h11 anyio sniffio pydantic pydantic-core pydantic-settings \
#     python-dotenv annotated-types typing-inspection typing-extensions python-multipart \
#     httpx httpcore certifi idna safetensors tqdm pytest pluggy iniconfig packaging \
#     python-json-logger fastapi-swagger setuptools imagecodecs fpng lazy-loader pillow-heif \
#     threadpoolctl httptools spandrel einops 'torchvision==0.26.*' \
#     litserve==0.2.19 pyzmq   # (torchvision 0.26: the one built for torch 2.11; litserve: the peer)
# The project itself is installed from this tree into the same target (its
# folders import as srserve.*), built offline with the carried setuptools.
# Results land in $OUT (cuda-tests.txt, bench-*.json, bench.txt, nvidia-smi.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/srserve-device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --find-links .whl --no-deps --no-cache-dir --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 SR_DEVICE=cuda
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/torch.txt"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt"
# srserve against LitServe 0.2.19 on the same weights, both on the device, 1 and 16 clients (~1.5 min).
python3 -m bench.compare --device cuda --loads 256x256 --skip overload memory --quick --json "$OUT/compare-cuda.json" \
  2>&1 | tee -a "$OUT/bench.txt"
bench() {  # NAME ARGS...
  local name=$1; shift
  python3 -m bench.serve_bench --model espcn --scale 4 --size 960x540 --requests 256 --json "$OUT/bench-$name.json" "$@" \
    2>&1 | tee -a "$OUT/bench.txt"
}
bench fp32-c32 --concurrency 32 --precision fp32
bench fp16-c32 --concurrency 32 --precision fp16
SR_MAX_BATCH_TILES=1 bench fp16-c32-batch1 --concurrency 32 --precision fp16
bench fp16-c1 --concurrency 1 --requests 64 --precision fp16
# JPEG on the device (nvJPEG) against libjpeg-turbo on the host: does SR_GPU_JPEG pay?
python3 -m bench.gpu_jpeg --json "$OUT/gpu-jpeg.json" 2>&1 | tee -a "$OUT/bench.txt"
# The simulated accelerator's H200 constants (bench/sim_accelerator.py) against this device.
python3 -m bench.sim_vs_real --json "$OUT/sim-vs-real.json" 2>&1 | tee -a "$OUT/bench.txt"
# Shape buckets against exact-fit windows on mixed sizes, the real server on this device (~1.5 min).
python3 -m bench.gpu_batching --device cuda --loads mixed --requests 128 --rounds 1 --json "$OUT/gpu-batching.json" 2>&1 \
  | tee -a "$OUT/bench.txt"
