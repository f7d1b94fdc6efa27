"""Full-size (or tiny, for the CPU smoke run) random-weight models, the same weights in ComfyUI and diffusers.

Nothing is downloaded: architectures are diffusers configs written here (SD1.5 and SDXL base as published),
weights are drawn on the target device, N(0, 1/fan_in) for matrices (activations stay O(1) through the deep
stacks), 1 for norm scales, small biases. The UNet's diffusers state dict is converted to ComfyUI's LDM
names with ComfyUI's own map (``comfy.utils.unet_to_diffusers``) and loaded with
``comfy.sd.load_diffusion_model_state_dict``; text encoders are random HF-format CLIP state dicts loaded with
``comfy.sd.load_text_encoder_state_dicts``; the VAE is the SD VAE config, loaded with ``comfy.sd.VAE`` (TAESD
too, for an informational decode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
SDXL_UNET = {
    "sample_size": 128, "block_out_channels": (320, 640, 1280), "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
# One level, one res block: ComfyUI detects it as SD1.5 (detection checks channels/context, not depth).
TINY_SD15_UNET = {
    "sample_size": 8, "block_out_channels": (320,), "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D",), "up_block_types": ("CrossAttnUpBlock2D",),
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD_VAE = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4, "sample_size": 512,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "hidden_act": "quick_gelu", "projection_dim": 768}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
          "hidden_act": "gelu", "projection_dim": 1280}


@dataclass(frozen=True)
class Family:
    """A benchmarked model family: UNet config, image size, conditioning shapes, text encoders."""

    name: str
    unet_config: dict
    image_size: int
    context_dim: int
    pooled_dim: int | None
    clips: tuple = field(default=("l",))


FAMILIES = {
    "sd15": Family("sd15", SD15_UNET, 512, 768, None, ("l",)),
    "sdxl": Family("sdxl", SDXL_UNET, 1024, 2048, 1280, ("l", "g")),
    "tiny-sd15": Family("tiny-sd15", TINY_SD15_UNET, 64, 768, None, ("l",)),
}


def _random_tensor(shape, name: str, generator: torch.Generator, device, dtype) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) == 1:
        value = 1.0 + 0.01 * torch.randn(shape, generator=generator, device=device)
    elif len(shape) <= 1:
        value = 0.01 * torch.randn(shape, generator=generator, device=device)
    else:
        value = torch.randn(shape, generator=generator, device=device) / math.sqrt(math.prod(shape[1:]))
    return value.to(dtype)


def random_state_dict(meta_module: torch.nn.Module, device, dtype, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every entry of ``meta_module``'s state dict, drawn on ``device``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, tensor in meta_module.state_dict().items():
        if tensor.dtype in (torch.int64, torch.int32):
            out[name] = torch.arange(tensor.shape[-1], device=device).expand(tensor.shape).clone()
        else:
            out[name] = _random_tensor(tuple(tensor.shape), name, generator, device, dtype)
    return out


def _materialise(meta_module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Give a meta-device module the tensors of ``sd`` (shared, not copied); nothing may stay on meta."""
    meta_module.load_state_dict(sd, assign=True, strict=True)
    left = [n for n, t in [*meta_module.named_parameters(), *meta_module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{len(left)} tensors still on the meta device, e.g. {left[:3]}")
    return meta_module.eval().requires_grad_(False)


def ldm_unet_config(cfg: dict) -> dict:
    """The ComfyUI/LDM block layout of a diffusers UNet config (what ``unet_to_diffusers`` needs)."""
    full = _diffusers_unet_defaults(cfg)
    levels = len(full["block_out_channels"])
    per_block = full["layers_per_block"]
    depths = full.get("transformer_layers_per_block", 1)
    depths = [depths] * levels if isinstance(depths, int) else list(depths)
    level_depth = [depths[i] if "CrossAttn" in full["down_block_types"][i] else 0 for i in range(levels)]
    base = full["block_out_channels"][0]
    return {
        "num_res_blocks": [per_block] * levels,
        "channel_mult": [c // base for c in full["block_out_channels"]],
        "transformer_depth": [d for d in level_depth for _ in range(per_block)],
        "transformer_depth_output": [d for d in level_depth for _ in range(per_block + 1)],
        "transformer_depth_middle": depths[-1],
    }


def _diffusers_unet_defaults(cfg: dict) -> dict:
    import inspect

    from diffusers import UNet2DConditionModel

    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **cfg}


def diffusers_to_comfy_unet(sd: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet state dict to ComfyUI's LDM names; every key must map."""
    import comfy.utils

    key_map = comfy.utils.unet_to_diffusers(ldm_unet_config(cfg))
    converted = {key_map[k]: v for k, v in sd.items() if k in key_map}
    unmapped = sorted(set(sd) - set(key_map))
    if unmapped:
        raise RuntimeError(f"{len(unmapped)} diffusers UNet keys have no ComfyUI name, e.g. {unmapped[:3]}")
    return converted


@dataclass
class UNetPair:
    """The same random UNet weights as a diffusers module and as a ComfyUI ModelPatcher."""

    diffusers: torch.nn.Module
    comfy: object
    parameters: int


def build_unet(family: Family, device, dtype, seed: int = 0) -> UNetPair:
    import comfy.sd
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        meta = UNet2DConditionModel(**family.unet_config)
    sd = random_state_dict(meta, device, dtype, seed)
    unet = _materialise(meta, sd).to(device=device, dtype=dtype)
    patcher = comfy.sd.load_diffusion_model_state_dict(diffusers_to_comfy_unet(sd, family.unet_config),
                                                       model_options={"dtype": dtype})
    if patcher is None:
        raise RuntimeError(f"ComfyUI did not detect the {family.name} UNet")
    return UNetPair(unet, patcher, sum(v.numel() for v in sd.values()))


def checkpoint_unet(unet_meta: torch.nn.Module, config: dict, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp16 weights for the diffusers UNet ``unet_meta`` (of ``config``), drawn on ``device``, under ComfyUI's
    checkpoint keys ``model.diffusion_model.*`` (LDM names), on the CPU: the UNet part of a checkpoint file."""
    weights = random_state_dict(unet_meta, device, torch.float16, seed)
    renamed = diffusers_to_comfy_unet(weights, config)
    return {"model.diffusion_model." + k: v.cpu() for k, v in renamed.items()}


def checkpoint_vae(device, seed: int = 1) -> dict[str, torch.Tensor]:
    """The SD VAE (SD1.5 and SDXL share its shape), random fp16, under a checkpoint's ``first_stage_model.*``."""
    import comfy.diffusers_convert
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        meta = AutoencoderKL(**SD_VAE)
    vae = random_state_dict(meta, device, torch.float16, seed)
    return {"first_stage_model." + k: v.cpu().contiguous()
            for k, v in comfy.diffusers_convert.convert_vae_state_dict(vae).items()}


def build_vae(device, dtype, seed: int = 1):
    """The SD VAE (SD1.5 and SDXL share its shape) with random weights: (diffusers module, comfy VAE)."""
    import comfy.sd
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        meta = AutoencoderKL(**SD_VAE)
    sd = random_state_dict(meta, device, torch.float32, seed)
    vae = _materialise(meta, sd).to(device=device, dtype=dtype)
    return vae, comfy.sd.VAE(sd={k: v.clone() for k, v in sd.items()})


def build_taesd(family: Family, seed: int = 4):
    """A TAESD-shaped VAE (ComfyUI's ``comfy.taesd.taesd.TAESD``, 4 latent channels) with random weights, loaded
    with ``comfy.sd.VAE`` (detected by its ``taesd_decoder.*`` keys): the fast preview decoder, for timing only."""
    import comfy.sd
    from comfy.taesd.taesd import TAESD

    with torch.device("meta"):
        meta = TAESD(latent_channels=4)
    sd = random_state_dict(meta, "cpu", torch.float32, seed)
    sd = {k: v for k, v in sd.items() if k.startswith(("taesd_encoder.", "taesd_decoder."))}
    # The latent scale core's VAELoader sets for taesd (SD1.x) / taesdxl.
    scale = 0.13025 if family.pooled_dim else 0.18215
    return comfy.sd.VAE(sd={**sd, "vae_scale": torch.tensor(scale), "vae_shift": torch.tensor(0.0)})


def clip_state_dict(spec: dict, device, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A random HF-format CLIP text encoder (``CLIPTextModelWithProjection`` of ``spec``: :data:`CLIP_L`, :data:`CLIP_G`)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **spec)
    with torch.device("meta"):
        meta = CLIPTextModelWithProjection(config)
    sd = random_state_dict(meta, device, dtype, seed)
    return {k: v for k, v in sd.items() if "position_ids" not in k}


def build_clip(family: Family, device, seed: int = 2):
    """A ComfyUI CLIP object (CLIP-L, or CLIP-L + CLIP-G for SDXL) with random weights."""
    import comfy.sd

    specs = {"l": CLIP_L, "g": CLIP_G}
    state_dicts = [clip_state_dict(specs[c], device, seed + i) for i, c in enumerate(family.clips)]
    if family.clips == ("l",):
        state_dicts[0].pop("text_projection.weight", None)
    return comfy.sd.load_text_encoder_state_dicts(state_dicts=state_dicts, embedding_directory=None)


def synthetic_conditioning(family: Family, batch: int, device, dtype, seed: int = 3):
    """ComfyUI conditioning and the matching diffusers embeddings, drawn from one generator."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    context = torch.randn(batch, 77, family.context_dim, generator=generator)
    pooled = torch.randn(batch, family.pooled_dim, generator=generator) if family.pooled_dim else None
    extra = {"pooled_output": pooled} if pooled is not None else {}
    comfy_cond = [[context, extra]]
    diffusers_kwargs = {"prompt_embeds": context.to(device, dtype)}
    if pooled is not None:
        diffusers_kwargs["pooled_prompt_embeds"] = pooled.to(device, dtype)
    return comfy_cond, diffusers_kwargs


def latent_shape(family: Family, batch: int) -> tuple[int, int, int, int]:
    side = family.image_size // 8
    return (batch, 4, side, side)
