"""A tiny SDXL-family *checkpoint* for the example workflows (test-only substitution, no downloads).

Published SDXL workflows load ``sd_xl_base_1.0.safetensors`` with ``CheckpointLoaderSimple`` (MODEL, CLIP,
VAE). A real SDXL text encoder pair is fixed-shape (CLIP-G alone is 694 M parameters), too big for CI on
2 CPU cores. So the tests and ``scripts/run_examples.py`` swap that one loader node for
``LCMPackTest_TinySDXLCheckpointLoader`` (devkit/testkit), which has the same input (``ckpt_name``)
and the same outputs, and reads a file written here:

* ``model.diffusion_model.*`` -- an SDXL-family UNet with Segmind Vega's transformer depths and all three
  levels at 320 channels (:data:`TINY_SDXL_UNET_CONFIG`, 107 M parameters instead of Vega's 745 M; ComfyUI's
  detection checks the depth list, not the widths, and loads it as ``Segmind_Vega``);
* ``first_stage_model.taesd_*`` -- a TAESD-shaped VAE (4 latent channels);
* ``conditioner.tiny_sdxl_clip.*`` -- ComfyUI's own ``SDXLClipModel`` (CLIP-L + CLIP-G, real tokenizer,
  real penultimate-layer and pooled outputs: context 768 + 1280 = 2048, pooled 1280) with 3 layers each (the penultimate-layer output needs 3)
  instead of 12/32 (widths unchanged, so the UNet's cross-attention and ADM inputs fit).

Everything downstream of the loader (LoRA loading, LCM sampling, VAE decode) is the real node under test.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .models import VEGA_UNET_CONFIG, build_taesd_state_dict, build_unet_state_dict, seeded_state_dict

CLIP_PREFIX = "conditioner.tiny_sdxl_clip."
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
FORMAT_KEY = "lcmpack.tiny_sdxl"
FORMAT_VERSION = "1"

TINY_SDXL_UNET_CONFIG = {**VEGA_UNET_CONFIG, "channel_mult": [1, 1, 1]}

# Overrides of ComfyUI's CLIP json configs through model_options["<name>_model_config"] (comfy/sd1_clip.py).
TINY_CLIP_OPTIONS = {
    "clip_l_model_config": {"num_hidden_layers": 3, "intermediate_size": 768},
    "clip_g_model_config": {"num_hidden_layers": 3, "intermediate_size": 1280},
}


def build_tiny_sdxl_clip(state_dict: dict[str, torch.Tensor] | None = None):
    """ComfyUI ``CLIP`` object around ``SDXLClipModel`` with the tiny depths; loads ``state_dict`` strictly."""
    from .host import prepare_import

    prepare_import()
    import comfy.sd
    import comfy.sdxl_clip
    import comfy.supported_models_base

    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    clip = comfy.sd.CLIP(target, model_options={**TINY_CLIP_OPTIONS, "dtype": torch.float32})
    if state_dict is not None:
        clip.cond_stage_model.load_state_dict(state_dict, strict=True)
    return clip


def build_tiny_sdxl_clip_state_dict(seed: int) -> dict[str, torch.Tensor]:
    clip = build_tiny_sdxl_clip()
    return seeded_state_dict(clip.cond_stage_model, seed)


def write_tiny_sdxl_checkpoint(path: Path, seed: int = 1) -> Path:
    """Write the tiny SDXL checkpoint (fp16 on disk, ~500 MB) via a temporary file and a rename."""
    from safetensors.torch import save_file

    sd = build_unet_state_dict(TINY_SDXL_UNET_CONFIG, seed, prefix=UNET_PREFIX)
    sd.update(build_taesd_state_dict(seed + 1, prefix=VAE_PREFIX))
    sd.update({CLIP_PREFIX + k: v for k, v in build_tiny_sdxl_clip_state_dict(seed + 2).items()})
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(sd, str(tmp), metadata={FORMAT_KEY: FORMAT_VERSION})
    os.replace(tmp, path)
    return path


def split_tiny_sdxl_checkpoint(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(unet, vae, clip) state dicts of a file written by :func:`write_tiny_sdxl_checkpoint`."""
    parts: tuple[dict, dict, dict] = ({}, {}, {})
    for key, value in sd.items():
        for index, prefix in enumerate((UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)):
            if key.startswith(prefix):
                parts[index][key[len(prefix):]] = value.float() if value.is_floating_point() else value
                break
    if not all(parts):
        raise ValueError("not a tiny SDXL test checkpoint: it lacks one of the "
                         f"{UNET_PREFIX!r}, {VAE_PREFIX!r}, {CLIP_PREFIX!r} sections")
    return parts
