#!/usr/bin/env bash
# The demo ControlNet's GPU run (one call): caption embeddings, training, evaluation; results to $OUT.
#   bash scripts/demo_controlnet_gpu.sh PAYLOAD OUT [demo_controlnet.py arguments...]
# PAYLOAD (unpacked) holds ComfyUI/ (a slim 0.33.0 copy), whl/ (comfy_aimdo, torchsde, trampoline), site/
# (comfy_kitchen), stubs/ (av), models/ (the shipped demo teacher, LoRAs and classifier) and pack/ (this
# repository at the commit that ran). Run from anywhere; writes OUT/demo_shapes_controlnet_mask.safetensors,
# OUT/controlnet.json and OUT/log.txt. Environment: PYTHON (default python3), SITE (where the wheels go,
# default /tmp/site), CAPTIONS (a caption_embeddings.safetensors to use instead of making it).
set -uo pipefail
PYTHON=${PYTHON:-python3}; SITE=${SITE:-/tmp/site}
PAYLOAD=$(cd "${1:?payload folder}" && pwd); OUT=${2:?output folder}; shift 2
mkdir -p "$OUT" "$SITE" "$SITE.pack"
LOG="$OUT/log.txt"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$PAYLOAD"/whl/*.whl >>"$LOG" 2>&1
cp -r "$PAYLOAD"/site/* "$SITE"/
cp "$PAYLOAD"/models/*.safetensors "$PAYLOAD"/pack/models/demo/
ln -sfn "$PAYLOAD/pack" "$SITE.pack/lcm_lora_pack"
export PYTHONPATH="$SITE:$SITE.pack:$PAYLOAD/stubs" COMFYUI_PATH="$PAYLOAD/ComfyUI" PYTHONUNBUFFERED=1
cd "$PAYLOAD/pack"
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | grep --line-buffered -v torchaudio | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
run nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if [ -z "${CAPTIONS:-}" ]; then
  run "$PYTHON" scripts/demo_train.py --stages captions --out "$SITE.captions" || exit 1
  CAPTIONS="$SITE.captions/caption_embeddings.safetensors"
fi
run "$PYTHON" scripts/demo_controlnet.py --embeddings "$CAPTIONS" --out "$OUT" "$@"
