#!/usr/bin/env bash
# Reproduces the shipped weights: x2 from scratch, then x3 and x4 starting from the
# trained x2 body (FSRCNN's transfer recipe). One process per architecture, one
# thread each (2-core machine). Every srtrain call passes --resume, so rerunning
# this script continues an interrupted run from runs/<model>_x<scale>/last.safetensors.
# Longer training: raise the step counts, e.g. ESPCN_X2=30000 scripts/train_weights.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

chain() {  # chain MODEL X2_STEPS FINETUNE_STEPS ARCH...
  local model=$1 x2=$2 ft=$3; shift 3
  "$BIN/srtrain" "$model" --scale 2 --arch "$@" --steps "$x2" --threads 1 --quiet --resume
  for s in 3 4; do
    "$BIN/srtrain" "$model" --scale "$s" --arch "$@" --steps "$ft" --lr 5e-4 \
      --init-from "weights/${model}_x2.safetensors" --threads 1 --quiet --resume
  done
}

mkdir -p runs
chain espcn "${ESPCN_X2:-12000}" "${ESPCN_FT:-9000}" features=64 mid_features=32 num_mid=3 >>runs/espcn.log 2>&1 &
chain deconv "${DECONV_X2:-7500}" "${DECONV_FT:-6000}" features=56 shrink=24 num_maps=4 >>runs/deconv.log 2>&1 &
wait
