#!/usr/bin/env bash
# Issue 26's GPU run (one GPU, ~5 min): caption embeddings, the fine-tuned teacher, then the quality table with
# the stricter check (every row of issue 13 and the fine-tune's rows); results to OUT.
#   bash scripts/demo_gpu_finetune.sh FOLDER OUT
# FOLDER holds the shipped teacher, LCM-LoRA, style LoRA and classifier (models/demo). The delta comes back
# split into 15 MiB parts (join: cat NAME.part* > NAME). FT_SECONDS caps the fine-tune (default 120 s); FT_ARGS,
# EVAL_ARGS, EVAL_COUNT shrink a dry run (FT_ARGS=--toy EVAL_COUNT=2 EVAL_ARGS="--only lcm_1 ft_lcm_2").
set -uo pipefail
FOLDER=${1:?folder with the shipped demo files}; OUT=${2:?output folder}
WORK=/tmp/demo-ft; mkdir -p "$WORK" "$OUT"
LOG="$OUT/log.txt"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | grep -v torchaudio | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
EMB="$WORK/caption_embeddings.safetensors"
[ -f "$EMB" ] || run python3 scripts/demo_train.py --stages captions --out "$WORK"
run python3 scripts/demo_finetune.py --folder "$FOLDER" --embeddings "$EMB" --out "$WORK" \
    --seconds "${FT_SECONDS:-120}" --steps "${FT_STEPS:-2500}" ${FT_ARGS:-}
cp "$WORK"/finetune.json "$OUT"/ 2>/dev/null
split -b 15M -d "$WORK/demo_shapes_small_finetune_delta.safetensors" "$OUT/demo_shapes_small_finetune_delta.safetensors.part"
run timeout "${EVAL_SECONDS:-180}" python3 scripts/demo_evaluate.py --folder "$FOLDER" --embeddings "$EMB" \
    --finetune "$WORK/demo_shapes_sd15_small_unet_vae.safetensors" --count "${EVAL_COUNT:-512}" --out "$WORK" ${EVAL_ARGS:-}
cp "$WORK"/quality.json "$WORK"/quality.md "$OUT"/ 2>/dev/null
ls -la "$OUT" | tee -a "$LOG"
