#!/usr/bin/env bash
# Builds .devcarry/payload (git-ignored) for GPU runs through the device tool: a slim copy of the provisioned
# ComfyUI 0.3.75 (no API nodes, tests or other families' tokenizers), wheels of what the device image lacks
# (Python 3.12, x86-64), a stub for PyAV (comfy_api imports it at module level; the benches never decode video)
# and setup.sh to source there. Size ~22 MB (the device takes 64 MiB a call).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.devcarry/payload
rm -rf "$out" && mkdir -p "$out/whl" "$out/ComfyUI"
(cd .comfyui/ComfyUI && tar --exclude=./comfy_api_nodes --exclude=./tests --exclude=./tests-unit \
   --exclude='./comfy/text_encoders/*_tokenizer' --exclude=__pycache__ --exclude=./custom_nodes/lcm-lora-pack \
   --exclude=./user --exclude=./output -cf - .) | (cd "$out/ComfyUI" && tar -xf -)
for spec in diffusers==0.42.1 torchsde trampoline pydantic pydantic-core pydantic-settings annotated-types \
            typing-inspection python-dotenv peft==0.21.2 einops spandrel alembic sqlalchemy mako; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out/whl" "$spec"
done
cp -r bench/device/stubs "$out/stubs"
cp bench/device/setup.sh "$out/setup.sh"
du -sh "$out"
