"""Tiny diffusion models of the families beyond SD that ComfyUI's own detection recognises (no downloads).

ComfyUI decides a diffusion model's family from its state dict (``comfy/model_detection.py``,
``detect_unet_config`` → ``model_config_from_unet``, used by core's ``UNETLoader`` through
``comfy.sd.load_diffusion_model_state_dict``). Each builder here hands core a *probe* -- only the keys and shapes
its detection reads -- lets core pick the family class and build that model on the meta device, and seeds every
parameter of the result (``models.seeded_state_dict``'s rule). So the file holds exactly the architecture the
host's ComfyUI builds for it, and the test then loads the file through core's ``UNETLoader``.

Sizes are the smallest the host's detection allows (one block of each kind):

======================  ===========================================================================================
family (core class)     what detection reads, and the width
======================  ===========================================================================================
FLUX.1 (``Flux``)       ``double_blocks.0.img_attn.norm.key_norm``, ``img_in``; hidden size from ``img_in``, heads =
                        hidden / sum(axes_dim) on 0.33.0 (width 128, 1 head), but 24 fixed heads on 0.3.75, whose
                        rotary axes need head width 128: width 3072 there (the first width core builds wins)
SD3 (``SD3``)           ``joint_blocks.0.context_block.attn.qkv``; depth = ``x_embedder`` width / 64: width 64, one
                        joint block
Qwen-Image (``QwenImage``)  ``txt_norm``; only ``img_in``'s input width and the block count are read: the width is
                        the published 3072 (24 heads × 128), one block (~380 M parameters, written as fp16)
Wan 2.1 (``WAN21_T2V``)  ``head.modulation``; dim from it, heads = dim / 128: dim 128, one block. Wan 2.2's A14B
                        high- and low-noise experts have this architecture: core loads them as ``WAN21_T2V``
Wan 2.2 TI2V-5B (``WAN22_T2V``)  the same, with 48 latent channels (``head.head`` = 4 × 48): the one Wan 2.2 model
                        core tells apart
======================  ===========================================================================================
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .models import _generator

# Published-style file names (core's UNETLoader lists models/diffusion_models).
FAMILY_FILES = {
    "flux": "tiny-flux1-dev.safetensors",
    "sd3": "tiny-sd3-medium.safetensors",
    "qwen-image": "tiny-qwen-image.safetensors",
    "wan2.1": "tiny-wan2.1-t2v-14b.safetensors",
    "wan2.2-high": "tiny-wan2.2-t2v-a14b-high-noise.safetensors",
    "wan2.2-low": "tiny-wan2.2-t2v-a14b-low-noise.safetensors",
    "wan2.2-5b": "tiny-wan2.2-ti2v-5b.safetensors",
}
# The core model_config class each file is detected as.
FAMILY_CLASSES = {"flux": "Flux", "sd3": "SD3", "qwen-image": "QwenImage", "wan2.1": "WAN21_T2V",
                  "wan2.2-high": "WAN21_T2V", "wan2.2-low": "WAN21_T2V", "wan2.2-5b": "WAN22_T2V"}


def _flux_probe(width: int) -> dict[str, tuple[int, ...]]:
    return {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (width, 64),
            "txt_in.weight": (width, 64), "vector_in.in_layer.weight": (width, 32),
            "guidance_in.in_layer.weight": (width, 256), "single_blocks.0.linear1.weight": (1,)}


def _wan_probe(channels: int) -> dict[str, tuple[int, ...]]:
    return {"head.modulation": (1, 2, 128), "head.head.weight": (4 * channels, 128),
            "blocks.0.ffn.0.weight": (256, 128), "patch_embedding.weight": (128, channels, 1, 2, 2)}


# Candidate probes per family, smallest first: the first one the host's core builds is used.
PROBES: dict[str, tuple[dict[str, tuple[int, ...]], ...]] = {
    "flux": (_flux_probe(128), _flux_probe(3072)),
    "sd3": ({"joint_blocks.0.context_block.attn.qkv.weight": (192, 64), "x_embedder.proj.weight": (64, 16, 2, 2),
             "final_layer.linear.weight": (64, 64), "y_embedder.mlp.0.weight": (64, 32),
             "context_embedder.weight": (64, 64), "pos_embed": (1, 64, 64)},),
    "qwen-image": ({"txt_norm.weight": (3584,), "img_in.weight": (3072, 64),
                    "transformer_blocks.0.attn.to_q.weight": (3072, 3072), "proj_out.weight": (64, 3072)},),
    "wan2.1": (_wan_probe(16),),
    "wan2.2-high": (_wan_probe(16),),
    "wan2.2-low": (_wan_probe(16),),
    "wan2.2-5b": (_wan_probe(48),),
}


def detected_model(family: str):
    """``(model_config, model on the meta device)`` that core's detection builds for ``family``'s smallest probe."""
    from .host import prepare_import

    prepare_import()
    import comfy.model_detection

    errors = []
    for probe in PROBES[family]:
        state = {key: torch.empty(shape) for key, shape in probe.items()}
        config = comfy.model_detection.model_config_from_unet(state, "")
        if config is None:
            raise RuntimeError(f"this ComfyUI detects no model family in the {family} probe")
        try:
            return config, config.get_model(state, "", device="meta")
        except ValueError as error:  # e.g. 0.3.75's fixed 24 FLUX heads at width 128
            errors.append(str(error))
    raise RuntimeError(f"this ComfyUI builds no {family} model from the probes: {errors}")


@torch.no_grad()
def build_family_state_dict(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every parameter of the detected model, seeded per name (weights ~ N(0, 1/fan_in), 1-D norm scales ≈ 1,
    biases small); fp16 where the model is large (Qwen-Image, FLUX at width 3072), fp32 otherwise."""
    _, model = detected_model(family)
    shapes = {k: v.shape for k, v in model.diffusion_model.state_dict().items()}
    dtype = torch.float16 if sum(math.prod(s) for s in shapes.values()) > 50_000_000 else torch.float32
    out = {}
    for name, shape in shapes.items():
        generator = _generator(seed, name)
        if name.endswith(("weight", "scale")) and len(shape) == 1:
            value = 1 + 0.01 * torch.randn(shape, generator=generator)
        elif len(shape) <= 1:
            value = 0.01 * torch.randn(shape, generator=generator)
        else:
            value = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
        out[name] = value.to(dtype).contiguous()
    return out


def write_family_model(family: str, folder: Path, seed: int = 0) -> Path:
    """Write ``family``'s tiny model as ``folder / FAMILY_FILES[family]`` (temporary name, then renamed)."""
    from safetensors.torch import save_file

    path = Path(folder) / FAMILY_FILES[family]
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(build_family_state_dict(family, seed), str(tmp))
    os.replace(tmp, path)
    return path
