#!/usr/bin/env bash
# Builds the GPU payload for the real-time / Dynamic VRAM benches (bench/device/run_realtime_device.sh) in OUT
# (default .devcarry/rt, git-ignored; the device tool carries it, 64 MiB a call with the working tree):
#   comfy/<version>/  slim copies of the ComfyUI hosts (no API nodes, tests, blueprints or other families' tokenizers)
#   whl/              wheels the device image lacks (Python 3.12, x86-64), comfy-kitchen left out (59 MB):
#   site/             comfy-kitchen 0.2.31 unpacked without its compiled CUDA/HIP kernels (fp8/int8 only; it
#                     loads them optionally, fp16 SD never calls them), comfy-aimdo 0.4.13 as a wheel
#   pack/             this branch's committed tree (git archive HEAD), without models/demo and docs/images
#   stubs/            the PyAV stand-in
# Usage: bench/device/make_payload_hosts.sh [OUT] [VERSIONS...]   (versions from ../shared/comfyui, default 0.33.0 0.8.0)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-.devcarry/rt}"; shift || true
versions=("${@:-0.33.0 0.8.0}"); versions=(${versions[@]})
shared="${LCMPACK_SHARED_COMFY:-/work/shared/comfyui}"
rm -rf "$out" && mkdir -p "$out/whl" "$out/site" "$out/pack" "$out/comfy"
for v in "${versions[@]}"; do
  mkdir -p "$out/comfy/$v"
  (cd "$shared/$v" && tar --exclude=./comfy_api_nodes --exclude=./tests --exclude=./tests-unit --exclude=./blueprints \
     --exclude='./comfy/text_encoders/*_tokenizer' --exclude=__pycache__ --exclude=./custom_nodes/lcm-lora-pack \
     --exclude=./user --exclude=./output -cf - .) | (cd "$out/comfy/$v" && tar -xf -)
done
for spec in comfy-aimdo==0.4.13 diffusers==0.42.1 torchsde trampoline pydantic pydantic-core pydantic-settings \
            annotated-types typing-inspection python-dotenv spandrel alembic sqlalchemy mako simpleeval blake3 \
            kornia kornia-rs; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out/whl" "$spec" 2>/dev/null
done
tmp=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d "$tmp" comfy-kitchen==0.2.31 2>/dev/null
(cd "$out/site" && unzip -q "$tmp"/comfy_kitchen-*.whl -x '*/_C.abi3.so')
rm -rf "$tmp"
git archive HEAD | tar -x -C "$out/pack" --exclude=models/demo --exclude=docs/images
cp -r bench/device/stubs "$out/stubs"
du -sh "$out" "$out"/*
