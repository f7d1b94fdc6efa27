"""ComfyUI side of the mix nodes: read the stack's files, resolve them with core key maps, patch, report.

Kept apart from ``mix_nodes`` so the node classes stay schema + a short execute. Pure math is in ``lora/``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ..lora import applied as applied_record
from ..lora import comfy_apply, mix
from ..lora.errors import LoraAlreadyApplied, LoraCoverageError
from ..lora.io import read_lora_file
from ..lora.kinds import is_accelerator, style_weight_advice
from ..samplers.comfy_model_sampling import with_lcm_sampling

LOG = logging.getLogger(__name__)


class StackEntry(NamedTuple):
    """One item of an ``LCMPACK_LORA_STACK``: file name in models/loras, weight λ, role."""

    lora_name: str
    weight: float
    role: str


@dataclass
class LoadedStack:
    """The stack's LoRAs resolved to target weight keys, the core-only adapter patches, the coverage and
    the model's key maps (``comfy_apply.model_key_maps``: built once per node execution, not per file)."""

    entries: list[mix.MixEntry]
    core_patches: list[tuple[int, dict]] = field(default_factory=list)
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)
    maps: tuple = ({}, {}, {})

    @property
    def key_map(self) -> dict:
        """Core's LoRA-name → weight-key maps of the UNet (and CLIP when given), merged."""
        unet_map, clip_map, _ = self.maps
        return {**unet_map, **clip_map}


def lora_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


def export_device():
    """ComfyUI's compute device when it is a CUDA GPU (so ``--cpu`` is respected), else the CPU."""
    import comfy.model_management
    import torch

    device = comfy.model_management.get_torch_device()
    return device if device.type == "cuda" else torch.device("cpu")


def _check_not_applied(lora, role: str, model) -> None:
    """The loader's applied-twice record: the same file, or a second accelerator, is refused."""
    same = applied_record.find_same_file(model.model_options, lora.sha256, lora.content_sha256)
    if same is not None:
        raise LoraAlreadyApplied(f"'{lora.name}' is already applied to this model (as '{same['name']}', strength "
                                 f"{same['strength']}); remove it from the stack or the earlier loader so it "
                                 "is not applied twice.")
    previous = applied_record.find_acceleration(model.model_options)
    if previous is not None and (role == mix.ROLE_ACCELERATOR or lora.kind != "style"):
        raise LoraAlreadyApplied(f"'{lora.name}' would stack on '{previous['name']}' ({previous['kind']}), an "
                                 "acceleration LoRA this model already carries; mix from the base model instead.")


def _resolve(lora, item: StackEntry, model, clip, allow_partial: bool, loaded: LoadedStack) -> mix.MixEntry:
    """Family + coverage checks of the loader, then modules keyed by target; core-only adapters to core."""
    comfy_apply.check_family(lora, comfy_apply.model_family(model))
    _check_not_applied(lora, item.role, model)
    unet_matched, clip_matched, unmatched = comfy_apply.coverage(lora, model, clip, loaded.maps)
    matched = {**unet_matched, **clip_matched}
    total = len(matched) + len(unmatched)
    loaded.coverage[lora.name] = (len(matched), total)
    if unmatched and not allow_partial:
        raise LoraCoverageError(f"LoRA '{lora.name}': {len(unmatched)} of {total} modules match no weight of this "
                                f"model, e.g. {unmatched[:3]}. Use a LoRA made for this model or set "
                                "allow_partial. Nothing was patched.")
    core_only = {m: t for m, t in matched.items() if m not in lora.modules}
    if core_only:
        loaded.core_patches.append((len(loaded.entries), comfy_apply.core_patches(lora, core_only)))
    modules = {target: lora.modules[m] for m, (_, target) in matched.items() if m in lora.modules}
    return mix.MixEntry(lora=replace(lora, modules=modules), weight=float(item.weight), role=item.role)


def load_stack(stack, model, clip, allow_partial: bool) -> LoadedStack:
    """Read every LoRA of the stack and resolve it against ``model``/``clip`` with the loader's checks."""
    import folder_paths

    if not stack:
        raise mix.MixError("the LoRA stack is empty: connect at least one 'LoRA Stack' node.")
    loaded = LoadedStack(entries=[], maps=comfy_apply.model_key_maps(model, clip))
    for item in stack:
        path = folder_paths.get_full_path_or_raise("loras", item.lora_name)
        lora = read_lora_file(path, name=item.lora_name)
        loaded.entries.append(_resolve(lora, item, model, clip, allow_partial, loaded))
    mix.check_entries(loaded.entries)
    return loaded


def _adapter(factors: mix.MixedFactors):
    from ..lora.comfy_mixed_adapter import MixedLoRAAdapter

    return MixedLoRAAdapter(factors)


def _split(patches: dict) -> tuple[dict, dict]:
    """(UNet patches, text-encoder patches) by target key."""
    unet = {k: p for k, p in patches.items() if k.startswith("diffusion_model.")}
    return unet, {k: p for k, p in patches.items() if k not in unet}


def apply_modules(model, clip, modules: dict[str, mix.MixedFactors], loaded: LoadedStack, weights) -> tuple:
    """One clone of MODEL (and of CLIP if touched) carrying the whole mix.

    Each mixed layer is one ``MixedLoRAAdapter`` patch at strength 1 (source-dtype factors, the scales
    λᵢ·αᵢ/rᵢ in its float32 rank scale); adapters that core keeps for itself (LoHa/LoKr/DoRA/diffs) are
    added as core patches at their LoRA's weight λᵢ.
    """
    groups = [(1.0, {k: _adapter(m) for k, m in modules.items()})]
    groups += [(weights[index], patches) for index, patches in loaded.core_patches if weights[index] != 0.0]
    new_model = model.clone()
    needs_clip = any(_split(patches)[1] for _, patches in groups)
    new_clip = clip.clone() if needs_clip else clip
    done: set = set()
    for strength, patches in groups:
        unet, text = _split(patches)
        done |= set(new_model.add_patches(unet, strength))
        if text:
            done |= set(new_clip.add_patches(text, strength))
    missing = set(modules) - done
    if missing:
        raise LoraCoverageError(f"{len(missing)} mixed layers were not patched by ComfyUI, e.g. {sorted(missing)[0]}.")
    for entry, weight in zip(loaded.entries, weights, strict=True):
        if weight != 0.0:
            applied_record.record_applied(new_model.model_options, entry.lora.name, entry.lora.sha256,
                                          entry.lora.kind, entry.lora.family, weight,
                                          content_sha256=entry.lora.content_sha256)
    return new_model, new_clip, done


def with_lcm_sampling_if_needed(model, entries) -> tuple[object, bool]:
    """LCM model sampling when an LCM accelerator with a non-zero weight is in the mix, as the loader does
    (``with_lcm_sampling`` keeps an LCM sampling already set, else installs the pack's)."""
    if not any(e.role == mix.ROLE_ACCELERATOR and e.lora.kind == "lcm" and e.weight != 0.0 for e in entries):
        return model, False
    return with_lcm_sampling(model, boundary=True), True


def mix_report(loaded: LoadedStack, weights, applied, lcm_sampling: bool) -> str:
    """The loader's report, per LoRA of the mix, plus the sampler advice for the accelerator's kind."""
    family = loaded.entries[0].lora.family
    lines = [f"LoRA mix of {len(loaded.entries)} LoRAs, family {comfy_apply.FAMILY_NAMES.get(family, family)}, "
             f"{len(applied)} layers patched (ΔW = Σ λᵢ·αᵢ/rᵢ·UᵢDᵢ):"]
    for entry, weight in zip(loaded.entries, weights, strict=True):
        lora = entry.lora
        done, total = loaded.coverage[lora.name]
        lines.append(f"  {entry.role:<11} {lora.name} ({lora.format}, {lora.kind}, sha256 {lora.sha256[:12]}): "
                     f"weight {entry.weight:g} -> applied {weight:g}, {done}/{total} modules")
    kinds = [e.lora.kind for e, w in zip(loaded.entries, weights, strict=True)
             if (e.role == mix.ROLE_ACCELERATOR or is_accelerator(e.lora.kind)) and w != 0.0]
    if kinds and len(loaded.entries) > 1:
        lines.append(f"Style weights with {comfy_apply.KIND_NAMES.get(kinds[0], kinds[0])}: "
                     f"{style_weight_advice(kinds[0])}")
    if lcm_sampling:
        lines.append(comfy_apply.SAMPLER_ADVICE["lcm"])
    elif kinds:
        lines.append(comfy_apply.SAMPLER_ADVICE.get(kinds[0], comfy_apply.SAMPLER_ADVICE["style"]))
    else:
        lines.append("No accelerator in the mix: model sampling unchanged.")
    return "\n".join(lines)


def export_report(path: Path, mode: str, result, loaded: LoadedStack, weights) -> str:
    worst_key, worst = result.report.worst_layer
    sources = [f"{e.lora.name} ({e.role}, {w:g})" for e, w in zip(loaded.entries, weights, strict=True)]
    return (f"Exported {path.name} ({mode}, {result.metadata['lcmpack.save_dtype']}, rank {result.rank}, {len(result.modules)} layers, "
            f"{path.stat().st_size / 2**20:.1f} MiB) to {path.parent}\n"
            f"Measured relative error: total {result.report.total_error:.3e}, worst layer {worst:.3e} "
            f"({worst_key})\nSources: {json.dumps(sources)}")
