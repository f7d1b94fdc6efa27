#!/usr/bin/env bash
# Builds the demo ControlNet's one-call GPU payload (scripts/demo_controlnet_gpu.sh) as one xz tar, 60 MB, so it
# fits the device tool's 64 MiB with the ~4.5 MB working tree. From the repository root:
#   bash scripts/demo_controlnet_payload.sh RT DEMO_FILES OUT.tar.xz
# RT: the output of bench/device/make_payload_hosts.sh (its comfy/0.33.0, whl/, site/, stubs/); DEMO_FILES: the
# four shipped demo .safetensors (teacher + VAE, LCM-LoRA, style LoRA, classifier); MODELS picks fewer of them (the
# distillation sweep's payload: MODELS="sd15_unet_vae classifier"; those two are 50.9 MB in xz). The tar holds ComfyUI/
# (0.33.0's library part: comfy/, comfy_execution/, comfy_api/, comfy_config/ and five top-level modules),
# whl/ (comfy_aimdo, torchsde, trampoline only), site/, stubs/, models/ and pack/ (git archive HEAD).
# On the device, from the repository root:
#   python3 -c "import tarfile; tarfile.open('P.tar.xz', 'r:xz').extractall('/tmp/p')"
#   bash /tmp/p/pack/scripts/demo_controlnet_gpu.sh /tmp/p "$OUT" --steps 3000 --seconds 200
set -euo pipefail
RT=$(cd "${1:?RT payload}" && pwd); DEMO=$(cd "${2:?demo files}" && pwd); TARGET=${3:?output .tar.xz}
work=$(mktemp -d)
mkdir -p "$work/ComfyUI" "$work/whl" "$work/models" "$work/pack"
(cd "$RT/comfy/0.33.0" && tar --exclude=__pycache__ -cf - comfy comfy_execution comfy_api comfy_config main.py \
   folder_paths.py node_helpers.py comfyui_version.py latent_preview.py) | (cd "$work/ComfyUI" && tar -xf -)
cp "$RT"/whl/comfy_aimdo-*.whl "$RT"/whl/torchsde-*.whl "$RT"/whl/trampoline-*.whl "$work/whl/"
cp -r "$RT/site" "$RT/stubs" "$work/"
for name in ${MODELS:-sd15_unet_vae lcm_lora striped_style classifier}; do
  cp "$DEMO/demo_shapes_$name.safetensors" "$work/models/"
done
git archive HEAD | tar -x -C "$work/pack" --exclude='models/demo/*.safetensors' --exclude=docs/images \
  --exclude=tests --exclude=example_workflows --exclude=web
(cd "$work" && tar -cf - ComfyUI whl site stubs models pack) | xz -9e -T2 > "$TARGET"
rm -rf "$work"
ls -la "$TARGET"
