"""Generated LoRA files for the tiny models of the families beyond SD (``family_models.py``), in the key spellings
users' files have (no downloads):

==========================  ==================================================================================
spelling                    keys (the families whose published accelerators use it)
==========================  ==================================================================================
``diffusers``               ``transformer.<diffusers name>.lora_A/lora_B.weight`` (Hyper-FLUX, FLUX.1-Turbo-Alpha,
                            Hyper-SD3: diffusers' FLUX/SD3 LoRA layout; for FLUX the names are diffusers' split
                            ``to_q/to_k/to_v`` that core maps onto slices of the fused ``qkv`` weights)
``kohya``                   ``lora_unet_<core name with _>.lora_down/lora_up.weight`` + ``.alpha`` (kohya's FLUX
                            scripts: ``lora_unet_double_blocks_0_img_attn_qkv``)
``bare``                    ``transformer_blocks.<n>.….lora_down/lora_up.weight`` + ``.alpha``
                            (Qwen-Image-Lightning)
``diffusion_model``         ``diffusion_model.blocks.<n>.….lora_down/lora_up.weight`` + ``.alpha`` (the Wan 2.1
                            lightx2v and Wan 2.2 Lightning files)
==========================  ==================================================================================

The modules are the spellings core's own key map (``comfy.lora.model_lora_keys_unet``) knows for the model's
weights, filtered by ``pattern``; the shape of each is its target's (a slice's rows for a fused weight).
"""
from __future__ import annotations

import re

import torch

from .loras import _generator

PREFIXES = {"diffusers": "transformer.", "kohya": "lora_unet_", "bare": "", "diffusion_model": "diffusion_model."}
HALVES = {"diffusers": (".lora_B.weight", ".lora_A.weight"), "kohya": (".lora_up.weight", ".lora_down.weight"),
          "bare": (".lora_up.weight", ".lora_down.weight"), "diffusion_model": (".lora_up.weight", ".lora_down.weight")}
# Layers the published accelerators cover (attention and feed-forward of every block), per spelling.
ATTENTION = r"(attn\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|attn_qkv|attn_proj|self_attn_[qkvo]|" \
            r"cross_attn_[qkvo]|self_attn\.[qkvo]|cross_attn\.[qkvo]|img_attn_(qkv|proj)|txt_attn_(qkv|proj)|" \
            r"linear[12]|ffn\.[02]|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|img_mlp\.net\.(0\.proj|2)|proj_mlp|proj_out|attn_qkv)$"


def _target_shape(target, shapes: dict) -> tuple[int, int] | None:
    """(rows, columns) of a key-map target: a weight key, or core's ``(key, (dim, offset, size))`` slice."""
    if isinstance(target, tuple):
        key, (dim, _offset, size) = target
        shape = shapes.get(key)
        return None if shape is None or dim != 0 else (int(size), int(shape[1]))
    shape = shapes.get(target)
    return None if shape is None or len(shape) != 2 else (int(shape[0]), int(shape[1]))


def family_modules(model_patcher, spelling: str, pattern: str = ATTENTION) -> dict[str, tuple[int, int]]:
    """``{module name: (out, in)}``: the spellings of core's key map for this model that start with the spelling's
    prefix (and no other known prefix) and whose name matches ``pattern``."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model_patcher.model, {})
    shapes = {k: v.shape for k, v in model_patcher.model.state_dict().items()}
    prefix = PREFIXES[spelling]
    others = tuple(p for p in PREFIXES.values() if p and p != prefix) + ("lycoris_", "lora_transformer_")
    out = {}
    for name, target in key_map.items():
        if not name.startswith(prefix) or name.startswith(others) or not re.search(pattern, name):
            continue
        shape = _target_shape(target, shapes)
        if shape is not None:
            out[name] = shape
    return dict(sorted(out.items()))


def family_lora_state_dict(model_patcher, spelling: str, rank: int = 4, alpha: float | None = None, seed: int = 0,
                           pattern: str = ATTENTION, up_scale: float = 0.1) -> dict[str, torch.Tensor]:
    """A LoRA in ``spelling`` for ``model_patcher``'s family (module docstring). ``alpha`` None: no alpha tensors
    (scale 1, as diffusers' files without them)."""
    up_suffix, down_suffix = HALVES[spelling]
    out: dict[str, torch.Tensor] = {}
    modules = family_modules(model_patcher, spelling, pattern)
    if not modules:
        raise ValueError(f"core's key map has no {spelling!r} spelling matching {pattern!r} for this model")
    for module, (rows, columns) in modules.items():
        down = torch.randn((rank, columns), generator=_generator(seed, module + ".down")) / columns ** 0.5
        up = torch.randn((rows, rank), generator=_generator(seed, module + ".up")) * up_scale / rank ** 0.5
        out[module + down_suffix] = down.contiguous()
        out[module + up_suffix] = up.contiguous()
        if alpha is not None:
            out[module + ".alpha"] = torch.tensor(float(alpha))
    return out
