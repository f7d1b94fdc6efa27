"""Resolve a LoRA's modules onto a model's weights through a key map (pure: the key map is an argument).

The key map is ComfyUI core's (``comfy.lora.model_lora_keys_unet(model.model, {})`` /
``model_lora_keys_clip(clip.cond_stage_model, {})``): LoRA module spelling → model weight key. Core maps
kohya spellings of both LDM and diffusers names (``lora_unet_<name with _>``), but not the PEFT/modern
diffusers spellings of attention layers (``unet.…attn1.to_q`` with ``lora_A/B``) nor ``base_model.model.``
(ComfyUI issue #9753). Each module is therefore tried in the spellings:

1. the file's own name (what core would look up);
2. the kohya spelling of the same layer: ``lora_unet_`` + diffusers/LDM name with ``.``→``_`` (after undoing
   the legacy ``.processor.to_q`` spelling), ``lora_te_/lora_te1_/lora_te2_`` + text-encoder name.

A module *matches* when one spelling is in the key map and, if target shapes are given, up @ down has the
target's number of elements with the same output rows. Everything else is *unmatched*. :func:`resolve` turns a
:class:`~lora.types.LoraFile` into a :class:`~lora.types.ResolvedLora` (modules keyed by the model's weight keys).
"""
from __future__ import annotations

import math

import torch

from . import formats
from .detect import module_part
from .formats import peft_component
from .types import LoraFile, ResolvedLora


def _undo_legacy_processor(inner: str) -> str:
    """``….attn1.processor.to_out`` → ``….attn1.to_out.0`` (inverse of core's legacy spelling)."""
    inner = inner.replace(".processor.", ".")
    return inner + ".0" if inner.endswith(".to_out") else inner


def module_spellings(module: str) -> list[str]:
    """Spellings of one LoRA module under which a core key map may know it, most specific first."""
    spellings = [module]
    if module.startswith("lora_"):
        if module.startswith("lora_te_"):
            spellings.append("lora_te1_" + module[len("lora_te_"):])
        elif module.startswith("lora_te1_"):
            spellings.append("lora_te_" + module[len("lora_te1_"):])
        return spellings
    prefix, inner = peft_component(module)
    inner = _undo_legacy_processor(inner)
    part, _ = module_part(module)
    underscored = inner.replace(".", "_")
    if part == "te2":
        spellings += [f"text_encoder_2.{inner}", f"lora_te2_{underscored}"]
    elif part == "te":
        spellings += [f"text_encoder.{inner}", f"lora_te_{underscored}", f"lora_te1_{underscored}"]
    else:
        if inner.startswith("diffusion_model."):
            inner = inner[len("diffusion_model."):]
        spellings += [f"diffusion_model.{inner}", f"lora_unet_{inner.replace('.', '_')}"]
    return list(dict.fromkeys(spellings))


def target_shape(target, target_shapes: dict):
    """The shape a module updates: its weight's, or for core's ``(key, (dim, offset, size))`` target (a slice of a
    fused weight: FLUX's ``qkv`` and ``linear1`` in ``comfy.lora.model_lora_keys_unet``) the slice's."""
    if isinstance(target, str):
        return target_shapes.get(target)
    key, (dim, _offset, size) = target[0], target[1]
    shape = target_shapes.get(key)
    if shape is None or not 0 <= dim < len(shape):
        return None
    return tuple(int(size) if index == dim else int(d) for index, d in enumerate(shape))


def _shape_fits(module_shape: tuple[int, int], target_shape) -> bool:
    out_features, in_numel = module_shape
    return (target_shape is not None and len(target_shape) >= 2 and int(target_shape[0]) == out_features
            and math.prod(int(d) for d in target_shape[1:]) == in_numel)


def module_names(lora: LoraFile) -> list[str]:
    """All module names of a LoRA: LoRA modules plus modules whose tensors are left to core (``extra``)."""
    return formats.module_names(lora.modules, lora.extra)


def _update_shape(lora: LoraFile, module: str) -> tuple[int, int] | None:
    lora_module = lora.modules.get(module)
    if lora_module is None:
        return None  # core adapters (LoHa/LoKr/...): core checks their shapes itself
    return int(lora_module.up.shape[0]), math.prod(int(d) for d in lora_module.down.shape[1:])


def match_modules(lora: LoraFile, key_map: dict[str, str],
                  target_shapes: dict[str, torch.Size] | None = None) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """``({module: (spelling in key map, target weight key)}, [unmatched module descriptions])``."""
    matched: dict[str, tuple[str, str]] = {}
    unmatched: list[str] = []
    for module in module_names(lora):
        hit = next((s for s in module_spellings(module) if s in key_map), None)
        if hit is None:
            unmatched.append(module)
            continue
        target = key_map[hit]
        shape = _update_shape(lora, module)
        if target_shapes is not None and shape is not None and not _shape_fits(
                shape, target_shape(target, target_shapes)):
            unmatched.append(f"{module} (update {shape[0]}x{shape[1]} does not fit {target} "
                             f"{tuple(target_shape(target, target_shapes) or ())})")
            continue
        matched[module] = (hit, target)
    return matched, unmatched


def _core_tensors(lora: LoraFile, matched: dict[str, tuple[str, str]]) -> tuple[dict[str, torch.Tensor],
                                                                                dict[str, str]]:
    """The tensors of the matched modules left to core, renamed from the file's module name to the spelling
    core's key map knows (suffixes kept: ``.hada_w1_a``, ``.lokr_w1``, ``.dora_scale``, ``.lora_mid.weight``,
    ``.alpha``, …), and the ``{spelling: weight key}`` map that ``comfy.lora.load_lora`` takes.

    Only a rename: core reads these adapters by their key suffixes (``comfy.weight_adapter.*.load``), so the
    file's own tensors are handed over unchanged. Plain LoRA modules never take this route.
    """
    tensors: dict[str, torch.Tensor] = {}
    targets: dict[str, str] = {}
    for module, (spelling, target) in matched.items():
        if module in lora.modules:
            continue
        targets[spelling] = target
        for key, tensor in lora.extra.items():
            if key.startswith(module + "."):
                tensors[spelling + key[len(module):]] = tensor
    return tensors, targets


def _text_encoder_hint(unmatched: list[str]) -> list[str]:
    return [f"{u} (text-encoder module: connect the CLIP input)" if module_part(u.split(" ")[0])[0] != "unet" else u
            for u in unmatched]


def resolve(lora: LoraFile, unet_map: dict[str, str], clip_map: dict[str, str] | None = None,
            target_shapes: dict[str, torch.Size] | None = None) -> ResolvedLora:
    """``lora`` resolved onto one model: modules keyed by its weight keys, core-only adapters, coverage.

    ``unet_map`` / ``clip_map`` are core's key maps of the model and its text encoder (``clip_map`` None: no
    CLIP connected, and text-encoder modules are reported as needing it); ``target_shapes`` the weight shapes.
    UNet spellings are tried first, the rest against the text encoder.
    """
    matched, unmatched = match_modules(lora, unet_map, target_shapes)
    unet_count = len(matched)
    if unmatched:
        rest = LoraFile(**{**lora.__dict__, "modules": {k: v for k, v in lora.modules.items() if k in unmatched},
                           "extra": {k: v for k, v in lora.extra.items()
                                     if any(k.startswith(u + ".") for u in unmatched)}})
        clip_matched, unmatched = match_modules(rest, clip_map or {}, target_shapes)
        matched.update(clip_matched)
        if clip_map is None:
            unmatched = _text_encoder_hint(unmatched)
    core_tensors, core_targets = _core_tensors(lora, matched)
    return ResolvedLora(
        name=lora.name, sha256=lora.sha256, format=lora.format, family=lora.family, kind=lora.kind,
        content_sha256=lora.content_sha256, notes=list(lora.notes),
        modules={target: lora.modules[module] for module, (_, target) in matched.items() if module in lora.modules},
        core_tensors=core_tensors, core_targets=core_targets, matched=len(matched),
        total=len(matched) + len(unmatched), unet_matched=unet_count, unmatched=unmatched)
