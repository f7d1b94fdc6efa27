"""Graph (c) of issue 23 -- krita's live graph on SDXL at 1024² -- and the models it needs, built here (nothing is
downloaded): random weights, drawn on the device, in the layouts users' files have, so the server's own loaders
(``CheckpointLoaderSimple``, ``LoraLoaderModelOnly``, ``ControlNetLoader``) read them as they read real ones.

* ``rt-sdxl-random.safetensors``: an SDXL checkpoint -- the UNet of SDXL base (diffusers config
  ``synthetic.SDXL_UNET``, renamed to ComfyUI's LDM keys), the SD VAE, and CLIP-L + CLIP-G at full size, renamed
  for saving by ComfyUI's own ``supported_models.SDXL.process_clip_state_dict_for_saving`` (what core's
  ``CheckpointSave`` writes), fp16;
* ``rt-sdxl-lcm.safetensors``: an LCM-LoRA-shaped file for it (rank 64, kohya keys), the Hyper-SD stand-in;
* ``rt-sdxl-controlnet.safetensors``: a ControlNet of the same UNet config (ComfyUI's ``comfy.cldm.cldm.ControlNet``
  on the config ComfyUI detects from the UNet's keys, 3-channel hint), ``control_model.*`` layout.

Smoke (the CPU check of the script): the same files with an SDXL-family UNet of 320 channels on every level
(ComfyUI's detection matches SDXL on depths and context, not widths) and the full text encoders, at 128².
"""
from __future__ import annotations

import os
from pathlib import Path

CKPT, LORA, CONTROLNET = "rt-sdxl-random.safetensors", "rt-sdxl-lcm.safetensors", "rt-sdxl-controlnet.safetensors"


def side(smoke: bool) -> int:
    return 128 if smoke else 1024


def unet_config(smoke: bool) -> dict:
    """The diffusers UNet config: SDXL base, or (smoke) SDXL's depths at 320 channels on every level."""
    from lcm_lora_pack.bench import synthetic

    if not smoke:
        return synthetic.SDXL_UNET
    return {**synthetic.SDXL_UNET, "block_out_channels": (320, 320, 320), "attention_head_dim": (5, 5, 5),
            "sample_size": 16}


def prepare_sdxl(base: Path, smoke: bool) -> None:
    """Write the three files into ``base/models`` (each once; ``device``: CUDA unless smoke)."""
    import torch
    from diffusers import UNet2DConditionModel
    from lcm_lora_pack.bench import lora_files, synthetic

    paths = (base / "models/checkpoints" / CKPT, base / "models/loras" / LORA, base / "models/controlnet" / CONTROLNET)
    if all(path.exists() for path in paths):
        return
    device = "cpu" if smoke else "cuda"
    config = unet_config(smoke)
    with torch.device("meta"):
        unet_meta = UNet2DConditionModel(**config)
    unet = synthetic.checkpoint_unet(unet_meta, config, device)
    save_atomically(paths[0], {**unet, **synthetic.checkpoint_vae(device), **clip_weights(device)})
    save_atomically(paths[2], controlnet_weights(unet, device))
    del unet
    lora_files.write_lora(paths[1], lora_files.lora_state_dict(unet_meta, lora_files.LCM_TARGETS, 64, 8.0, 21, device))


def clip_weights(device) -> dict:
    """CLIP-L and CLIP-G at full size, random, as an SDXL checkpoint stores them (``conditioner.embedders.*``):
    ComfyUI's internal names renamed by its own SDXL saving code."""
    import comfy.supported_models
    import torch
    from lcm_lora_pack.bench import synthetic

    internal = {}
    for index, (name, spec) in enumerate((("l", synthetic.CLIP_L), ("g", synthetic.CLIP_G))):
        weights = synthetic.clip_state_dict(spec, device, 2 + index, torch.float16)
        internal.update({f"clip_{name}.transformer.{k}": v.cpu() for k, v in weights.items()})
    sdxl = comfy.supported_models.SDXL(dict(comfy.supported_models.SDXL.unet_config))
    return {k: (v.contiguous() if v.is_floating_point() else v)
            for k, v in sdxl.process_clip_state_dict_for_saving(internal).items()}


def controlnet_weights(unet: dict, device) -> dict:
    """A ControlNet of the UNet ComfyUI detects from ``unet``'s keys (``model_config_from_unet``), random fp16, under
    ``control_model.*`` (the original ControlNet layout; ``ControlNetLoader`` detects its config the same way)."""
    import comfy.model_detection
    import comfy.ops
    import torch
    from comfy.cldm.cldm import ControlNet
    from lcm_lora_pack.bench import synthetic

    detected = comfy.model_detection.model_config_from_unet(unet, "model.diffusion_model.")
    if detected is None:
        raise RuntimeError("ComfyUI does not detect the bench's SDXL UNet")
    config = {k: v for k, v in detected.unet_config.items() if k not in ("out_channels", "image_model")}
    with torch.device("meta"):
        net = ControlNet(**config, hint_channels=3, dtype=torch.float16, device="meta",
                         operations=comfy.ops.disable_weight_init)
    weights = synthetic.random_state_dict(net, device, torch.float16, 13)
    return {"control_model." + k: v.cpu().contiguous() for k, v in weights.items()}


def save_atomically(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
