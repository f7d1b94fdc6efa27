"""Small, seeded models that ComfyUI detects as real families (no downloads).

* SD1.5 family: a one-level UNet (model_channels 320, context_dim 768, 25.8 M parameters) -- ComfyUI's
  detection does not check depth -- plus a TAESD-shaped VAE and a full-shape random CLIP-L, saved as one
  checkpoint.
* SDXL family: a UNet with Segmind Vega's transformer depths [0,0,1,1,2,2] (context 2048, adm 2816),
  saved as a diffusion model (``models/diffusion_models``).

Every parameter is present (ComfyUI leaves missing weights uninitialised) and drawn from a generator
seeded by (seed, parameter name), so the same name always gets the same tensor.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

SD15_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [1], "transformer_depth": [1], "channel_mult": [1], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1], "use_temporal_attention": False, "use_temporal_resblock": False,
}

VEGA_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 1, 1, 2, 2],
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": -1, "use_linear_in_transformer": True, "context_dim": 2048,
    "num_head_channels": 64, "num_heads": -1, "use_temporal_attention": False, "use_temporal_resblock": False,
}


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def seeded_value(seed: int, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The seeded value of one tensor ``name`` (see :func:`seeded_state_dict`)."""
    generator = _generator(seed, name)
    leaf = name.rsplit(".", 1)[-1]
    if dtype in (torch.int64, torch.int32):
        raise ValueError(f"{name}: integer tensors are copied, not seeded")
    if leaf == "weight" and len(shape) == 1:  # every 1-D weight here is a norm's scale
        value = torch.ones(shape) + 0.01 * torch.randn(shape, generator=generator)
    elif len(shape) <= 1:
        value = 0.01 * torch.randn(shape, generator=generator)
    else:
        value = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    return value.to(torch.float32).contiguous()


@torch.no_grad()
def seeded_state_dict(module: torch.nn.Module, seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Fill every parameter/buffer of ``module`` deterministically and return its state dict.

    Weights ~ N(0, 1/fan_in) (keeps activations O(1) through deep stacks), norms weight 1, biases small.
    """
    out = {}
    for name, tensor in module.state_dict().items():
        if tensor.dtype in (torch.int64, torch.int32):
            out[prefix + name] = tensor.clone().to(torch.float32).contiguous()
        else:
            out[prefix + name] = seeded_value(seed, name, tuple(tensor.shape))
    return out


def build_unet_state_dict(unet_config: dict, seed: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Construct ComfyUI's ``UNetModel`` for ``unet_config`` on the meta device and seed its weights."""
    from .host import prepare_import

    prepare_import()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**unet_config, dtype=torch.float32, device="meta",
                         operations=comfy.ops.disable_weight_init)
    shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in unet.state_dict().items()}
    holder = torch.nn.Module()
    for name, tensor in shapes.items():
        holder.register_buffer(name.replace(".", "__"), tensor)
    seeded = seeded_state_dict(holder, seed)
    return {prefix + k.replace("__", "."): v for k, v in seeded.items()}


def build_taesd_state_dict(seed: int, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    from .host import prepare_import

    prepare_import()
    from comfy.taesd.taesd import TAESD

    vae = TAESD(latent_channels=4)
    sd = seeded_state_dict(vae, seed)
    return {prefix + k: v for k, v in sd.items() if k.startswith(("taesd_encoder.", "taesd_decoder."))}


def build_clip_l_state_dict(seed: int, prefix: str = "cond_stage_model.transformer.") -> dict[str, torch.Tensor]:
    """A full-shape CLIP-L text encoder (123.7 M parameters) with seeded random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            projection_dim=768)
    with torch.device("meta"):
        clip = CLIPTextModel(config)
    holder = torch.nn.Module()
    for name, tensor in clip.state_dict().items():
        holder.register_buffer(name.replace(".", "__"), torch.empty(tensor.shape, dtype=tensor.dtype))
    sd = {k.replace("__", "."): v for k, v in seeded_state_dict(holder, seed).items()}
    sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    return {prefix + k: v for k, v in sd.items()}


def write_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    """An SD1.5-family checkpoint ComfyUI's ``CheckpointLoaderSimple`` loads (UNet + TAESD VAE + CLIP-L)."""
    from safetensors.torch import save_file

    sd = build_unet_state_dict(SD15_UNET_CONFIG, seed, prefix="model.diffusion_model.")
    sd.update(build_taesd_state_dict(seed + 1))
    sd.update(build_clip_l_state_dict(seed + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def write_vega_diffusion_model(path: Path, seed: int = 0) -> Path:
    """An SDXL-family (Segmind Vega depths) UNet ComfyUI's ``UNETLoader`` loads."""
    from safetensors.torch import save_file

    sd = build_unet_state_dict(VEGA_UNET_CONFIG, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
