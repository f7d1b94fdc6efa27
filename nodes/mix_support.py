"""ComfyUI side of the mix nodes: read the stack's files, resolve them with core key maps, patch, report.

Kept apart from ``mix_nodes`` so the node classes stay schema + a short execute. Pure math is in ``lora/``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..lora import mix
from ..lora.interim_io import read_lora_file, resolve_targets
from ..samplers.comfy_model_sampling import make_lcm_model_sampling, prediction_type_of

LOG = logging.getLogger(__name__)

APPLIED_KEY = "lcmpack_applied_loras"
_FAMILIES = {"SD15": "sd15", "SD20": "sd2", "SD21UnclipL": "sd2", "SDXL": "sdxl", "SDXLRefiner": "sdxl-refiner",
             "SSD1B": "sdxl", "Segmind_Vega": "sdxl", "KOALA_700M": "sdxl", "KOALA_1B": "sdxl"}


class StackEntry(NamedTuple):
    """One item of an ``LCMPACK_LORA_STACK``: file name in models/loras, weight λ, role."""

    lora_name: str
    weight: float
    role: str


class LoraStackError(ValueError):
    """The stack does not fit the model (family, coverage, applied twice); the message says the fix."""


@dataclass
class LoadedStack:
    entries: list[mix.MixEntry]
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)


def lora_folder() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


def key_map(model, clip=None) -> dict:
    """Core's own LoRA-name → weight-key maps of the UNet (and CLIP when given)."""
    import comfy.lora

    keys = comfy.lora.model_lora_keys_unet(model.model, {})
    if clip is not None:
        keys = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, keys)
    return keys


def model_family(model) -> str:
    name = type(model.model.model_config).__name__
    return _FAMILIES.get(name, name.lower())


def load_stack(stack, model, clip, allow_partial: bool) -> LoadedStack:
    """Read, check and resolve every LoRA of the stack against ``model``/``clip``."""
    import folder_paths

    if not stack:
        raise mix.MixError("the LoRA stack is empty: connect at least one 'LoRA Stack' node.")
    keys, family = key_map(model, clip), model_family(model)
    applied = {item["sha256"] for item in model.model_options.get(APPLIED_KEY, [])}
    loaded = LoadedStack(entries=[])
    for item in stack:
        path = folder_paths.get_full_path_or_raise("loras", item.lora_name)
        lora_file = read_lora_file(path)
        if lora_file.family != family:
            raise LoraStackError(f"{item.lora_name} is a {lora_file.family} LoRA but the model is {family}; "
                                 "use LoRAs trained for this base model.")
        if lora_file.sha256 in applied:
            raise LoraStackError(f"{item.lora_name} is already applied to this model (an earlier loader or "
                                 "mixer); remove one of the two so it is not applied twice.")
        resolved, missing = resolve_targets(lora_file, keys)
        total = len(lora_file.modules)
        loaded.coverage[item.lora_name] = (total - len(missing), total)
        if missing and not allow_partial:
            hint = " (connect the clip input)" if any(m.startswith("lora_te") for m in missing) else ""
            raise LoraStackError(f"{item.lora_name}: {len(missing)} of {total} modules do not match this model"
                                 f"{hint}, e.g. {missing[0]}; use the LoRA's base model or set allow_partial.")
        loaded.entries.append(mix.MixEntry(lora=resolved, weight=float(item.weight), role=item.role))
    mix.check_entries(loaded.entries)
    return loaded


def _adapter(module):
    from comfy.weight_adapter.lora import LoRAAdapter

    return LoRAAdapter(set(), (module.up, module.down, float(module.alpha), None, None, None))


def apply_modules(model, clip, modules: dict) -> tuple:
    """One clone of MODEL (and CLIP if touched) with every mixed module as one core LoRA patch."""
    unet = {k: _adapter(m) for k, m in modules.items() if k.startswith("diffusion_model.")}
    text = {k: _adapter(m) for k, m in modules.items() if not k.startswith("diffusion_model.")}
    new_model = model.clone()
    applied = set(new_model.add_patches(unet, 1.0)) if unet else set()
    new_clip = clip
    if text:
        new_clip = clip.clone()
        applied |= set(new_clip.add_patches(text, 1.0))
    missing = set(modules) - applied
    if missing:
        raise LoraStackError(f"{len(missing)} mixed layers were not patched by ComfyUI, e.g. {sorted(missing)[0]}.")
    return new_model, new_clip, applied


def record_applied(model, entries) -> None:
    """Remember which LoRA files a patched model carries (for the applied-twice check)."""
    record = list(model.model_options.get(APPLIED_KEY, []))
    record += [{"name": e.lora.name, "sha256": e.lora.sha256, "role": e.role} for e in entries if e.weight != 0.0]
    model.model_options[APPLIED_KEY] = record


def set_lcm_sampling_if_needed(model, entries) -> bool:
    """Install LCM model sampling (50-step grid, boundary 10/0.5) when an LCM accelerator is in the mix."""
    if not any(e.role == mix.ROLE_ACCELERATOR and e.lora.kind == "lcm" and e.weight != 0.0 for e in entries):
        return False
    sampling = make_lcm_model_sampling(model.model.model_config, prediction_type_of(model), 50, 10.0, 0.5)
    model.add_object_patch("model_sampling", sampling)
    return True


def mix_report(loaded: LoadedStack, weights, applied, lcm_sampling: bool) -> str:
    lines = [f"LoRA mix of {len(loaded.entries)} LoRAs (family {loaded.entries[0].lora.family}), "
             f"{len(applied)} layers patched:"]
    for entry, weight in zip(loaded.entries, weights, strict=True):
        done, total = loaded.coverage[entry.lora.name]
        lines.append(f"  {entry.role:<11} {entry.lora.name}: weight {entry.weight:g} -> applied {weight:g}, "
                     f"{done}/{total} modules")
    lines.append("LCM sampling set (LCM accelerator in the mix)." if lcm_sampling else "Model sampling unchanged.")
    return "\n".join(lines)


def export_report(path: Path, mode: str, result, loaded: LoadedStack, weights) -> str:
    worst_key, worst = result.report.worst_layer
    sources = [f"{e.lora.name} ({e.role}, {w:g})" for e, w in zip(loaded.entries, weights, strict=True)]
    return (f"Exported {path.name} ({mode}, rank {result.rank}, {len(result.modules)} layers, "
            f"{path.stat().st_size / 2**20:.1f} MiB) to {path.parent}\n"
            f"Measured relative error: total {result.report.total_error:.3e}, worst layer {worst:.3e} "
            f"({worst_key})\nSources: {json.dumps(sources)}")
