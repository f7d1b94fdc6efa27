"""The same random UNet in diffusers and in ComfyUI, for parity tests against diffusers' LoRA code.

``diffusers_unet(unet_config, ldm_sd)`` builds a diffusers ``UNet2DConditionModel`` matching a ComfyUI
``unet_config`` (so far: ``models.SD15_UNET_CONFIG``, one level) and loads the ComfyUI (LDM-named) weights
through ``comfy.utils.unet_to_diffusers``, strictly (every diffusers parameter must be covered).
``lora_pipeline(unet, text_encoder)`` is the smallest object on which diffusers' own ``StableDiffusionLoraLoaderMixin``
methods run (``load_lora_weights``, ``set_adapters``, ``fuse_lora``, ``unload_lora_weights``) over the UNet and optionally a CLIP-L text encoder.
"""
from __future__ import annotations

import torch
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG


def diffusers_kwargs(unet_config: dict) -> dict:
    """``UNet2DConditionModel`` arguments equal to the ComfyUI config (only the SD1.5 test config)."""
    if unet_config is not SD15_UNET_CONFIG and unet_config != SD15_UNET_CONFIG:
        raise ValueError("only models.SD15_UNET_CONFIG has a diffusers twin here")
    return dict(sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D",),
                up_block_types=("CrossAttnUpBlock2D",), block_out_channels=(320,), layers_per_block=1,
                cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)


def ldm_to_diffusers_names(unet_config: dict) -> dict[str, str]:
    """ComfyUI/LDM weight name (no ``diffusion_model.``) → diffusers parameter name."""
    from lcm_lora_pack.devkit.host import prepare_import

    prepare_import()
    import comfy.utils

    # ComfyUI's table maps label_emb.* both to class_embedding.* and add_embedding.* and keeps it in a set, so
    # which one an inversion keeps changes with PYTHONHASHSEED: pick by the model (SDXL's ADM is add_embedding).
    wanted = "add_embedding." if unet_config.get("num_classes") == "sequential" else "class_embedding."
    return {ldm: diff for diff, ldm in comfy.utils.unet_to_diffusers(unet_config).items()
            if not diff.startswith(("add_embedding.", "class_embedding.")) or diff.startswith(wanted)}


def diffusers_unet(unet_config: dict, ldm_sd: dict[str, torch.Tensor]):
    """A diffusers UNet holding exactly the ComfyUI weights ``ldm_sd`` (keys with or without the prefix)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**diffusers_kwargs(unet_config))
    to_diff = ldm_to_diffusers_names(unet_config)
    sd = {}
    for key, value in ldm_sd.items():
        key = key.removeprefix("diffusion_model.")
        if key in to_diff:
            sd[to_diff[key]] = value.to(torch.float32)
    missing, unexpected = unet.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise AssertionError(f"diffusers twin does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return unet.eval()


def comfy_weights_of_diffusers(unet, unet_config: dict) -> dict[str, torch.Tensor]:
    """The diffusers UNet's (fused) weights renamed to ComfyUI keys ``diffusion_model.<ldm>``."""
    to_ldm = {diff: ldm for ldm, diff in ldm_to_diffusers_names(unet_config).items()}
    return {f"diffusion_model.{to_ldm[k]}": v.detach().clone() for k, v in unet.state_dict().items() if k in to_ldm}


def lora_pipeline(unet, text_encoder=None):
    """A minimal object exposing diffusers' LoRA pipeline API over ``unet`` (and a CLIP text encoder)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    class LoraPipeline(StableDiffusionLoraLoaderMixin):
        _lora_loadable_modules = ["unet"] + (["text_encoder"] if text_encoder is not None else [])
        hf_device_map = None

        def __init__(self):
            self.unet = unet
            self.text_encoder = text_encoder

        @property
        def components(self):
            return {name: getattr(self, name) for name in self._lora_loadable_modules}

    return LoraPipeline()


def clip_l_text_encoder(clip_sd: dict[str, torch.Tensor]):
    """A transformers ``CLIPTextModel`` (CLIP-L shape) holding the given weights (``text_model.…`` keys)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            projection_dim=768)
    model = CLIPTextModel(config)
    weights = {k: v for k, v in clip_sd.items() if not k.endswith("position_ids")}  # a buffer, not a weight
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise AssertionError(f"CLIP twin does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
