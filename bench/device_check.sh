#!/usr/bin/env bash
# One prepared run on a lent GPU machine: the tests marked `cuda` and the GPU
# serving benchmark. That machine has torch, pillow and prometheus-client but
# not the web stack: carry the wheels in .whl (see the device tool's README):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl \
#     fastapi starlette uvicorn h11 anyio sniffio pydantic pydantic-core pydantic-settings \
#     python-dotenv annotated-types typing-inspection typing-extensions python-multipart \
#     httpx httpcore certifi idna safetensors tqdm pytest pluggy iniconfig packaging
# Results land in $OUT (cuda-tests.txt, bench-gpu.json, nvidia-smi.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/srserve-device}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/torch.txt"
python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.txt"
for tile in 128 256; do
  SR_DEVICE=cuda SR_TILE_SIZE=$tile SR_MAX_BATCH_TILES=32 python3 -m bench.serve_bench \
    --requests 512 --concurrency 32 --raw-repeats 3 --json "$OUT/bench-gpu-tile$tile.json" 2>&1 | tee -a "$OUT/bench.txt"
done
