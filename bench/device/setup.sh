# Source on the device from the repo root: `source .devcarry/payload/setup.sh [PACK_DIR]`
# Installs the carried wheels into /tmp/site, puts the av stub last on PYTHONPATH (used only if PyAV is missing),
# sets COMFYUI_PATH to the slim ComfyUI 0.3.75 copy, and makes PACK_DIR (default: the repo root) importable as
# lcm_lora_pack through /tmp/packroot/lcm_lora_pack.
_payload="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$_payload"/whl/*.whl >/tmp/payload-pip.log 2>&1 || { echo "payload: pip failed"; tail -5 /tmp/payload-pip.log; }
export COMFYUI_PATH="$_payload/ComfyUI"
_pack="$(cd "${1:-.}" && pwd)"
rm -rf /tmp/packroot && mkdir -p /tmp/packroot && ln -s "$_pack" /tmp/packroot/lcm_lora_pack
export PYTHONPATH="/tmp/site:/tmp/packroot:${PYTHONPATH:-}:$_payload/stubs"
export PYTHONUNBUFFERED=1
echo "payload ready: COMFYUI_PATH=$COMFYUI_PATH pack=$_pack torch=$(python3 -c 'import torch;print(torch.__version__, torch.cuda.is_available())')"
