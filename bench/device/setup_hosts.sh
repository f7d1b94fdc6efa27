# Source on the device from the repository root: `source .devcarry/rt/pack/bench/device/setup_hosts.sh PAYLOAD HOST`
# Installs the payload's wheels into /tmp/site (once), puts site/ (comfy-kitchen) and the PyAV stand-in on
# PYTHONPATH, links the payload's pack as lcm_lora_pack (/tmp/packroot) and sets COMFYUI_PATH to the host copy.
_payload="$(cd "$1" && pwd)"; _host="$2"
if [ ! -f /tmp/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$_payload"/whl/*.whl >/tmp/payload-pip.log 2>&1 || { echo "payload: pip failed"; tail -5 /tmp/payload-pip.log; }
  touch /tmp/site/.installed
fi
rm -rf /tmp/packroot && mkdir -p /tmp/packroot && ln -s "$_payload/pack" /tmp/packroot/lcm_lora_pack
export COMFYUI_PATH="$_payload/comfy/$_host"
export PYTHONPATH="/tmp/site:$_payload/site:/tmp/packroot:$_payload/stubs"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
echo "payload ready: host $_host, torch $(python3 -c 'import torch;print(torch.__version__, torch.cuda.is_available())')"
