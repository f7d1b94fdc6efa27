#!/usr/bin/env bash
# The demo family's GPU run (one H200): train, distil with the pack's trainer, evaluate; results to $OUT.
#   bash scripts/demo_gpu.sh smoke|full INPUTS OUT
# INPUTS may hold caption_embeddings.safetensors and, for "full", the vae.safetensors + classifier of an
# earlier run (the smoke run makes them); missing ones are made here.
# Large files come back split into 15 MiB parts (join: cat NAME.part* > NAME).
set -uo pipefail
MODE=${1:?smoke or full}; INPUTS=${2:?inputs folder}; OUT=${3:?output folder}
WORK=/tmp/demo-work; mkdir -p "$WORK" "$OUT"
LOG="$OUT/log.txt"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | grep -v torchaudio | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
cp "$INPUTS"/*.safetensors "$WORK"/ 2>/dev/null
[ -f "$WORK/caption_embeddings.safetensors" ] || run python scripts/demo_train.py --stages captions --out "$WORK"
if [ "$MODE" = smoke ]; then
  run python scripts/demo_train.py --stages vae classifier teacher style --teacher-steps 300 --style-steps 60 \
      --inputs "$INPUTS" --out "$WORK"
  run python scripts/demo_evaluate.py --folder "$WORK" --embeddings "$WORK/caption_embeddings.safetensors" \
      --count 128 --only teacher_25 teacher_4_dpmpp teacher_4_ddim teacher_style_25 --out "$WORK"
  if python -c "import lcm_lora_pack.distill" 2>/dev/null; then
    run python scripts/demo_distill.py --folder "$WORK" --out "$WORK" --count 256 --max_train_steps 20
  fi
  cp "$WORK"/vae.safetensors "$WORK"/demo_shapes_classifier.safetensors "$OUT"/
  split -b 15M -d "$WORK/caption_embeddings.safetensors" "$OUT/caption_embeddings.safetensors.part"
else
  STAGES="teacher style"
  [ -f "$WORK/vae.safetensors" ] || STAGES="vae classifier $STAGES"
  run python scripts/demo_train.py --stages $STAGES --inputs "$INPUTS" --out "$WORK" ${TRAIN_ARGS:-}
  split -b 15M -d "$WORK/demo_shapes_sd15_unet_vae.safetensors" "$OUT/demo_shapes_sd15_unet_vae.safetensors.part"
  cp "$WORK"/demo_shapes_striped_style.safetensors "$OUT"/
  run timeout ${DISTILL_SECONDS:-200} python scripts/demo_distill.py --folder "$WORK" --out "$WORK" ${DISTILL_ARGS:-}
  cp "$WORK"/demo_shapes_lcm_lora.safetensors "$OUT"/ 2>/dev/null
  run python scripts/demo_evaluate.py --folder "$WORK" --embeddings "$WORK/caption_embeddings.safetensors" \
      --count ${EVAL_COUNT:-512} --out "$WORK"
  (cd "$WORK" && tar -cf "$OUT/reports.tar" training.json quality.json quality.md distill.json distill_summary.json)
fi
cp "$WORK"/training.json "$WORK"/quality.json "$WORK"/quality.md "$OUT"/ 2>/dev/null
[ "$MODE" = full ] && rm -f "$OUT"/training.json "$OUT"/quality.json "$OUT"/quality.md
ls -la "$OUT" | tee -a "$LOG"
