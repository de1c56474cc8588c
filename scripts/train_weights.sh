#!/usr/bin/env bash
# Reproduces the shipped weights: x2 from scratch, x3 and x4 starting from the
# trained x2 body (FSRCNN's transfer recipe), then a short low-LR refinement of
# x2 that replaces it only if the held-out validation PSNR improves. One process
# per architecture, one thread each (2-core machine). Every srtrain call passes
# --resume, so rerunning this script continues an interrupted run from runs/.
# Longer training: raise the step counts, e.g. ESPCN_X2=30000 scripts/train_weights.sh
# `more` stages continue shipped weights with a new cosine cycle (runs/long*/), kept
# only when validation improves. Then dejpeg and denoise (x1), in parallel, one
# thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

val_psnr() {  # the held-out validation PSNR of a card: Y for upscalers, RGB for restoration
  "$BIN/python" -c "import json, sys; v = json.load(open(sys.argv[1]))['metrics']['validation']; \
print(v.get('psnr_y', v.get('psnr_rgb')))" "$1"
}
downscale() {  # the --data-downscale a card was trained with
  "$BIN/python" -c "import json, sys; print(json.load(open(sys.argv[1]))['training']['recipe']['extra'].get('data_downscale', 1))" "$1"
}
better() { "$BIN/python" -c "import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))" "$(val_psnr "$1")" "$(val_psnr "$2")"; }

# more MODEL SCALE STEPS LR TAG ARCH...: continue the shipped weights STEPS more steps at LR (a new
# warmup and cosine); the result replaces them only if the held-out validation PSNR improves.
# DS=N trains on N-times box-downscaled images, LOSS=l2 finishes on L2, VAL sets --val-every,
# PATCH and BATCH set --patch and --batch, RESCALE="0.8 0.6" adds resized copies of the training images (--data-rescale),
# GROW=1 widens (deconv: also deepens) the shipped model to ARCH first (srtrain --grow: same output;
# a plain copy when it is that wide already, so a GROW stage works whichever stage was kept).
# A stage that changes DS changes the validation images too, so its numbers cannot be compared
# with the shipped card's: such a stage is a recipe switch, measured once (see its comment) and kept.
more() {
  local model=$1 scale=$2 steps=$3 lr=$4 tag=$5; shift 5
  [ "$steps" -gt 0 ] || return 0
  "$BIN/srtrain" "$model" --scale "$scale" --arch "$@" --steps "$steps" --lr "$lr" --warmup 200 \
    --val-every "${VAL:-2000}" --data-downscale "${DS:-1}" --loss "${LOSS:-l1}" ${PATCH:+--patch "$PATCH"} ${BATCH:+--batch "$BATCH"} \
    ${RESCALE:+--data-rescale $RESCALE} --init-from "weights/${model}_x${scale}.safetensors" ${GROW:+--grow} --run-dir "runs/$tag/${model}_x${scale}" \
    --out "runs/$tag/out" --threads 1 --quiet --resume
  local new="runs/$tag/out/${model}_x${scale}.json" old="weights/${model}_x${scale}.json"
  if [ "$(downscale "$new")" != "$(downscale "$old")" ] || better "$new" "$old"; then
    cp "runs/$tag/out/${model}_x${scale}.safetensors" "$new" weights/
  fi
}

transfer() {  # transfer MODEL SCALE STEPS LR TAG ARCH...: SCALE afresh from the shipped x2 body, kept if validation improves
  local model=$1 scale=$2 steps=$3 lr=$4 tag=$5; shift 5
  "$BIN/srtrain" "$model" --scale "$scale" --arch "$@" --steps "$steps" --lr "$lr" --val-every "${VAL:-2000}" \
    --init-from "weights/${model}_x2.safetensors" --run-dir "runs/$tag/${model}_x${scale}" --out "runs/$tag/out" \
    --threads 1 --quiet --resume
  if better "runs/$tag/out/${model}_x${scale}.json" "weights/${model}_x${scale}.json"; then
    cp "runs/$tag/out/${model}_x${scale}.safetensors" "runs/$tag/out/${model}_x${scale}.json" weights/
  fi
}

chain() {  # chain MODEL X2_STEPS FINETUNE_STEPS REFINE_STEPS ARCH...
  local model=$1 x2=$2 ft=$3 refine=$4; shift 4
  "$BIN/srtrain" "$model" --scale 2 --arch "$@" --steps "$x2" --threads 1 --quiet --resume
  for s in 3 4; do
    "$BIN/srtrain" "$model" --scale "$s" --arch "$@" --steps "$ft" --lr 5e-4 \
      --init-from "weights/${model}_x2.safetensors" --threads 1 --quiet --resume
  done
  "$BIN/srtrain" "$model" --scale 2 --arch "$@" --steps "$refine" --lr 2e-4 --warmup 100 \
    --init-from "weights/${model}_x2.safetensors" --run-dir "runs/${model}_x2_refine" --out runs/refine \
    --threads 1 --quiet --resume
  if better "runs/refine/${model}_x2.json" "weights/${model}_x2.json"; then
    cp "runs/refine/${model}_x2.safetensors" "runs/refine/${model}_x2.json" weights/
  fi
}

mkdir -p runs
ESPCN=(features=64 mid_features=32 num_mid=3)
{
  chain espcn "${ESPCN_X2:-12000}" "${ESPCN_FT:-9000}" "${ESPCN_REFINE:-4000}" "${ESPCN[@]}"
  more espcn 2 "${ESPCN_X2_MORE:-15000}" 3e-4 long "${ESPCN[@]}"
  more espcn 3 "${ESPCN_X3_MORE:-9000}" 3e-4 long2 "${ESPCN[@]}"
  more espcn 3 "${ESPCN_X3_MORE2:-3000}" 1e-4 long3 "${ESPCN[@]}"
  VAL=1000 more espcn 4 "${ESPCN_X4_MORE:-6000}" 3e-4 long2 "${ESPCN[@]}"
  VAL=500 LOSS=l2 more espcn 4 "${ESPCN_X4_L2:-2500}" 1e-4 l2 "${ESPCN[@]}"
  # x4 another 6,000 steps at 3e-4 (Set5 30.73 -> 30.78, held-out 30.542 -> 30.554).
  VAL=1000 more espcn 4 "${ESPCN_X4_MORE2:-6000}" 3e-4 cont2 "${ESPCN[@]}"
  # x4 10,000 more at 3e-4 (Set5 30.78 -> 30.81, held-out 30.554 -> 30.569).
  VAL=1000 more espcn 4 "${ESPCN_X4_MORE3:-10000}" 3e-4 cont3 "${ESPCN[@]}"
  # x4 widened from 32 to 48 hidden channels (GROW=1: the same output at the start, 55,856 -> 95,120
  # parameters), 18,000 steps at 3e-4, best held-out at step 16,000 (Set5 30.81 -> 30.90, held-out 30.569 -> 30.613).
  VAL=1000 GROW=1 more espcn 4 "${ESPCN_X4_WIDE:-18000}" 3e-4 wide48 features=64 mid_features=48 num_mid=3
  # x4 7,000 more with scale augmentation, as deconv x2 below (Set5 30.900 -> 30.921, held-out 30.613 -> 30.623).
  VAL=1000 RESCALE="0.8 0.6" more espcn 4 "${ESPCN_X4_R86:-7000}" 3e-4 r86 features=64 mid_features=48 num_mid=3
} >>runs/espcn.log 2>&1 &
{
  chain deconv "${DECONV_X2:-7500}" "${DECONV_FT:-6000}" "${DECONV_REFINE:-3000}" features=56 shrink=24 num_maps=4
  # x2 widened to the 64/32 mapping (GROW=1: the same output at the start, 41,699 -> 61,891 parameters).
  VAL=1000 GROW=1 more deconv 2 "${DECONV_GROW:-5000}" 3e-4 grow features=64 shrink=32 num_maps=4
  VAL=1000 more deconv 2 "${DECONV_MORE:-10000}" 3e-4 cont features=64 shrink=32 num_maps=4
  # x3 and x4 start again from that x2 body (64/32 mapping), as the chain did from the 56/24 one.
  for s in 3 4; do
    VAL=1000 transfer deconv "$s" "${DECONV_XFER:-6000}" 5e-4 xfer features=64 shrink=32 num_maps=4
  done
  # x2 another 12,000 steps at 3e-4 (Set5 36.99 -> 37.07, held-out 36.48 -> 36.54), after x3 and x4 took its body.
  VAL=1000 more deconv 2 "${DECONV_MORE2:-12000}" 3e-4 cont2 features=64 shrink=32 num_maps=4
  # x3 and x4 6,000 more steps at 3e-4 from their own weights (Set5 x3 33.10 -> 33.18, held-out 32.59 -> 32.61;
  # x4 30.81 -> 30.86, held-out 30.54 -> 30.57).
  for s in 3 4; do
    VAL=1000 more deconv "$s" "${DECONV_MORE_X34:-6000}" 3e-4 cont2 features=64 shrink=32 num_maps=4
  done
  # x2 deepened from 4 to 6 mapping layers (GROW: the new maps start as identities, 80,451 parameters),
  # then 12,000 steps at 3e-4 (Set5 37.07 -> 37.13, held-out 36.535 -> 36.595).
  VAL=1000 GROW=1 more deconv 2 "${DECONV_DEEP:-12000}" 3e-4 deep6 features=64 shrink=32 num_maps=6
  # x3 deepened the same way from its own weights, 5,000 steps at 3e-4 (Set5 33.18 -> 33.26, held-out
  # 32.613 -> 32.641).
  VAL=1000 GROW=1 more deconv 3 "${DECONV_DEEP_X3:-5000}" 3e-4 deep6 features=64 shrink=32 num_maps=6
  # x4 deepened the same way from its own weights, 18,000 steps at 3e-4, best held-out at step 14,000
  # (Set5 30.86 -> 31.01, held-out 30.568 -> 30.637).
  VAL=1000 GROW=1 more deconv 4 "${DECONV_DEEP_X4:-18000}" 3e-4 deep6 features=64 shrink=32 num_maps=6
  # x2 5,000 more steps at 3e-4 on 6 maps (Set5 37.13 -> 37.15, held-out 36.595 -> 36.609).
  VAL=1000 more deconv 2 "${DECONV_CONT6:-5000}" 3e-4 cont6 features=64 shrink=32 num_maps=6
  # x3 the same (Set5 33.26 -> 33.30, held-out 32.641 -> 32.663).
  VAL=1000 more deconv 3 "${DECONV_CONT6_X3:-5000}" 3e-4 cont6 features=64 shrink=32 num_maps=6
  # x3 deepened again, from 6 to 8 mapping layers (99,011 parameters, under the 100k cap), 14,000 steps
  # at 3e-4, best held-out at step 13,000 (Set5 33.30 -> 33.39, held-out 32.663 -> 32.725).
  VAL=1000 GROW=1 more deconv 3 "${DECONV_DEEP8_X3:-14000}" 3e-4 deep8 features=64 shrink=32 num_maps=8
  # x3 10,000 more steps at 3e-4 on 8 maps, best held-out at step 8,000 (Set5 33.39 -> 33.43, goal 33.4
  # met; held-out 32.725 -> 32.756).
  VAL=1000 more deconv 3 "${DECONV_CONT8_X3:-10000}" 3e-4 cont8 features=64 shrink=32 num_maps=8
  # x2 deepened the same way, from 6 to 8 mapping layers, 14,000 steps at 3e-4, best held-out at step
  # 12,000 (Set5 37.15 -> 37.19, held-out 36.609 -> 36.672).
  VAL=1000 GROW=1 more deconv 2 "${DECONV_DEEP8_X2:-14000}" 3e-4 deep8 features=64 shrink=32 num_maps=8
  # x2 6,000 more steps at 3e-4 on 8 maps (Set5 37.19 -> 37.21, held-out 36.672 -> 36.680).
  VAL=1000 more deconv 2 "${DECONV_CONT8_X2:-6000}" 3e-4 cont8 features=64 shrink=32 num_maps=8
  # x2 6,000 more at 3e-4 on 96-px patches, 4 a batch: the same pixels a step, less of each patch near its
  # zero-padded border (Set5 37.21 -> 37.22, held-out 36.680 -> 36.697). The same cycle on L2 loss at 2e-4
  # (48-px patches) reached held-out 36.685 and Set5 37.191, so it is not a stage.
  VAL=1000 PATCH=96 BATCH=4 more deconv 2 "${DECONV_P96_X2:-6000}" 3e-4 p96 features=64 shrink=32 num_maps=8
  # x2 12,000 more at 3e-4 on 96-px patches (Set5 37.22 -> 37.24, held-out 36.697 -> 36.719; run here on
  # 1 thread, then resumed on 2 from step 5,000: the same recipe, which may differ in the last digits).
  VAL=1000 PATCH=96 BATCH=4 more deconv 2 "${DECONV_P96B_X2:-12000}" 3e-4 p96b features=64 shrink=32 num_maps=8
  # x2 5,000 more at 3e-4 on 96-px patches (Set5 37.24 -> 37.25, held-out 36.719 -> 36.731; run here on 2 threads).
  VAL=1000 PATCH=96 BATCH=4 more deconv 2 "${DECONV_P96C_X2:-5000}" 3e-4 p96c features=64 shrink=32 num_maps=8
  # x2 5,000 more the same way (Set5 37.246 -> 37.252, held-out 36.731 -> 36.735; 2 threads): the gains shrink.
  VAL=1000 PATCH=96 BATCH=4 more deconv 2 "${DECONV_P96D_X2:-5000}" 3e-4 p96d features=64 shrink=32 num_maps=8
  # x2 6,000 more with scale augmentation: every training image also at 0.8x and 0.6x, as FSRCNN trained
  # (held-out 36.735 -> 36.740, Set5 37.252 -> 37.306; the same cycle without it: 36.739 and 37.258).
  VAL=1000 PATCH=96 BATCH=4 RESCALE="0.8 0.6" more deconv 2 "${DECONV_R86_X2:-6000}" 3e-4 r86 features=64 shrink=32 num_maps=8
  # x2 6,000 more the same way (held-out 36.740 -> 36.748, Set5 37.306 -> 37.319).
  VAL=1000 PATCH=96 BATCH=4 RESCALE="0.8 0.6" more deconv 2 "${DECONV_R86B_X2:-6000}" 3e-4 r86b features=64 shrink=32 num_maps=8
} >>runs/deconv.log 2>&1 &
wait

# The x1 restoration models (degradations made on the fly; RESTORE=0 skips them).
RESTORER=(features=16 max_features=64)
# 16 features at full resolution stopped paying (the last dejpeg cycles: +0.03, +0.01 dB on Set5),
# so both models grow to 32 (GROW=1: same output at the start, 252,563 -> 380,323 parameters).
WIDE=(features=32 max_features=64)
restore() {  # restore TASK STEPS: STEPS at lr 5e-4 from scratch
  "$BIN/srtrain" "$1" --arch "${RESTORER[@]}" --steps "$2" --val-every 1000 --lr 5e-4 --warmup 300 \
    --threads 1 --quiet --resume --run-dir "runs/$1_x1"
}
if [ "${RESTORE:-1}" != 0 ]; then
  # On full-size sun_hays80 (4:2:0 JPEGs at about q75) dejpeg's continuation stayed flat (held-out
  # 32.18 dB after 2,000 more steps, 32.17 after 4,000), so it is off. The targets themselves carry
  # the artifacts and half-resolution colour that dejpeg should remove; on 2x box-averaged images
  # (DS=2) they mostly vanish: one cycle lifted Set5's gain at q20 from +0.79 to +1.20 dB and the
  # full-size held-out images from 32.16 to 32.31 dB (denoise: Set5 30.73 -> 30.82 dB at sigma 25).
  # Every stage after that switch trains and validates on DS=2.
  {
    restore dejpeg "${DEJPEG_STEPS:-6000}"
    more dejpeg 1 "${DEJPEG_MORE:-0}" 4e-4 long "${RESTORER[@]}"
    DS=2 VAL=1000 more dejpeg 1 "${DEJPEG_DS2:-10000}" 4e-4 ds2 "${RESTORER[@]}"
    DS=2 VAL=1000 more dejpeg 1 "${DEJPEG_DS2B:-12000}" 3e-4 ds2b "${RESTORER[@]}"
    DS=2 VAL=500 LOSS=l2 more dejpeg 1 "${DEJPEG_DS2C:-4000}" 1e-4 ds2c "${RESTORER[@]}"
    DS=2 VAL=1000 more dejpeg 1 "${DEJPEG_DS2D:-10000}" 2e-4 ds2d "${RESTORER[@]}"
    DS=2 VAL=1000 more dejpeg 1 "${DEJPEG_DS2E:-10000}" 2e-4 ds2e "${RESTORER[@]}"
    DS=2 VAL=1000 GROW=1 more dejpeg 1 "${DEJPEG_GROW:-18000}" 3e-4 grow "${WIDE[@]}"
    DS=2 VAL=1000 GROW=1 more dejpeg 1 "${DEJPEG_GROW2:-5000}" 2e-4 grow2 "${WIDE[@]}"
    # 96-px patches, 4 a batch (the same pixels per step): +0.010 dB on Set5 and +0.022 held-out, where the
    # cycle above on 48-px patches at the same rate gave +0.002 and +0.01. Widening to 48/96 features instead
    # (853,875 parameters, 12,000 steps at 3e-4) reached 30.328 held-out but fell on Set5 (+1.449 dB) at 1.8x
    # the CPU time per megapixel, so it is not a stage.
    DS=2 VAL=1000 PATCH=96 BATCH=4 more dejpeg 1 "${DEJPEG_P96:-8000}" 2e-4 p96 "${WIDE[@]}"
    # 128-px patches, 4 a batch: +0.004 dB on Set5 (+1.470) and +0.023 held-out (30.315 -> 30.338), then a
    # shorter cycle at 1.5e-4: Set5 +1.474, held-out 30.339.
    DS=2 VAL=1000 PATCH=128 BATCH=4 more dejpeg 1 "${DEJPEG_P128:-9000}" 2e-4 p128 "${WIDE[@]}"
    DS=2 VAL=1000 PATCH=128 BATCH=4 more dejpeg 1 "${DEJPEG_P128B:-5000}" 1.5e-4 p128b "${WIDE[@]}"
    # 192-px patches, 2 a batch (73,728 pixels a step): 8,000 steps at 1.2e-4, Set5 +1.474 -> +1.491 dB,
    # held-out 30.339 -> 30.356.
    DS=2 VAL=1000 PATCH=192 BATCH=2 more dejpeg 1 "${DEJPEG_P192:-8000}" 1.2e-4 p192 "${WIDE[@]}"
    # The same with scale augmentation (each image also at 0.8x and 0.6x, as the upscalers): 6,000 steps,
    # Set5 +1.491 -> +1.496 dB, held-out 30.356 -> 30.357.
    DS=2 VAL=1000 PATCH=192 BATCH=2 RESCALE="0.8 0.6" more dejpeg 1 "${DEJPEG_R86:-6000}" 1.2e-4 r86 "${WIDE[@]}"
    # Told JPEG's block phase (block=16: a learned bias per position in the 16-px period at every full-resolution
    # conv, zero at first, so the stage starts from the same output): Set5 +1.496 -> +1.499 dB, held-out
    # 30.357 -> 30.362. The same cycle without it (r86 above) gave +0.005 and +0.001.
    DS=2 VAL=1000 PATCH=192 BATCH=2 RESCALE="0.8 0.6" more dejpeg 1 "${DEJPEG_PHASE:-6000}" 1.2e-4 phase "${WIDE[@]}" block=16
  } >>runs/dejpeg.log 2>&1 &
  {
    restore denoise "${DENOISE_STEPS:-6000}"
    more denoise 1 "${DENOISE_MORE:-18000}" 4e-4 long "${RESTORER[@]}"
    more denoise 1 "${DENOISE_MORE2:-12000}" 3e-4 long2 "${RESTORER[@]}"
    DS=2 VAL=1000 more denoise 1 "${DENOISE_DS2:-10000}" 3e-4 ds2 "${RESTORER[@]}"
    DS=2 VAL=1000 more denoise 1 "${DENOISE_DS2B:-8000}" 2e-4 ds2b "${RESTORER[@]}"
    DS=2 VAL=500 LOSS=l2 more denoise 1 "${DENOISE_DS2C:-3000}" 1e-4 ds2c "${RESTORER[@]}"
    DS=2 VAL=1000 more denoise 1 "${DENOISE_DS2D:-8000}" 2e-4 ds2d "${RESTORER[@]}"
    DS=2 VAL=1000 GROW=1 more denoise 1 "${DENOISE_GROW:-18000}" 3e-4 grow "${WIDE[@]}"
  } >>runs/denoise.log 2>&1 &
  wait
fi
