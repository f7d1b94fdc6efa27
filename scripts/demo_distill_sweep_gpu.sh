#!/usr/bin/env bash
# Issue 26's distillation sweep (scripts/demo_distill_sweep.py) in one device call of at most 600 s; results to OUT.
#   bash scripts/demo_distill_sweep_gpu.sh PAYLOAD OUT STATE [demo_distill_sweep.py arguments...]
# PAYLOAD (unpacked; built by MODELS="sd15_unet_vae classifier" scripts/demo_controlnet_payload.sh) holds ComfyUI/
# (a slim 0.33.0), whl/, site/, stubs/, models/ (the demo teacher UNet + VAE and the classifier) and pack/ (this
# repository). STATE: the sweep.json an earlier call returned, or - for the first call: it is copied into OUT, so
# this call continues it. Returns OUT/sweep.json, OUT/sweep.md, OUT/log.txt (3 files, small).
# SWEEP_SECONDS (default 530): the call's budget; the sweep starts no unit whose estimate ends later and a hard stop
# follows 30 s after (the device's limit is 600 s with the payload's unpacking). WORK (default /tmp/sweep-work) keeps the assembled checkpoint, data, caption table, encoded
# data and the runs' checkpoints: a call made while the machine is still warm continues a run from its checkpoint.
set -uo pipefail
START=$(date +%s)
PYTHON=${PYTHON:-python3}; SITE=${SITE:-/tmp/site}; WORK=${WORK:-/tmp/sweep-work}
PAYLOAD=$(cd "${1:?payload folder}" && pwd); OUT=${2:?output folder}; STATE=${3:?state: sweep.json or -}; shift 3
mkdir -p "$OUT" "$SITE" "$SITE.pack" "$WORK"; OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log.txt"
[ "$STATE" = - ] || cp "$STATE" "$OUT/sweep.json" || exit 1
if [ ! -f "$SITE/.installed" ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$PAYLOAD"/whl/*.whl >>"$LOG" 2>&1
  cp -r "$PAYLOAD"/site/* "$SITE"/ && touch "$SITE/.installed"
fi
cp -n "$PAYLOAD"/models/*.safetensors "$PAYLOAD"/pack/models/demo/
ln -sfn "$PAYLOAD/pack" "$SITE.pack/lcm_lora_pack"
export PYTHONPATH="$SITE:$SITE.pack:$PAYLOAD/stubs" COMFYUI_PATH="$PAYLOAD/ComfyUI" PYTHONUNBUFFERED=1
cd "$PAYLOAD/pack"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | grep --line-buffered -v torchaudio | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
CAPTIONS="$WORK/caption_embeddings.safetensors"
[ -f "$CAPTIONS" ] || run "$PYTHON" scripts/demo_train.py --stages captions --out "$WORK" || exit 1
LEFT=$(( ${SWEEP_SECONDS:-530} - $(date +%s) + START ))
run timeout $((LEFT + 30)) "$PYTHON" scripts/demo_distill_sweep.py --out "$OUT" --work "$WORK" \
    --embeddings "$CAPTIONS" --budget-seconds "$LEFT" "$@"
rc=$?
ls -la "$OUT" | tee -a "$LOG"
exit $rc
