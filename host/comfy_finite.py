"""Why a ComfyUI sampling run went non-finite: the cause named for :class:`~samplers.finite.NonFiniteSamplingError`.

Called only after a step came out NaN/Inf (never on the fast path). It looks, in this order, at what can make a
step non-finite: the input latent, cfg, the model sampling's tables (LCM Model Sampling's ``sigma_data`` /
``timestep_scaling``), the LoRAs this pack applied (a non-finite strength; the largest alpha/rank, e.g. alpha
1e30, as the model's record holds it), and the merged weights the model runs with; it names every cause it finds.
"""
from __future__ import annotations

import math

import torch

from ..lora.applied import applied_loras

SAMPLING_TABLES = ("sigmas", "boundary_c_skip", "boundary_c_out")


def _finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _sampling_causes(model_sampling) -> list[str]:
    bad = [name for name in SAMPLING_TABLES if getattr(model_sampling, name, None) is not None
           and not _finite(getattr(model_sampling, name))]
    if not bad:
        return []
    constants = {k: getattr(model_sampling, k) for k in ("lcm_sigma_data", "timestep_scaling")
                 if hasattr(model_sampling, k)}
    return [f"the model sampling's {', '.join(bad)} hold NaN/Inf (constants {constants}): give LCM Model Sampling "
            "finite sigma_data and timestep_scaling (0.5 and 10 for published LCM-LoRAs)"]


def _lora_causes(model_options: dict) -> list[str]:
    causes, scaled = [], []
    for entry in applied_loras(model_options or {}):
        if not _finite(entry["strength"]):
            causes.append(f"the LoRA '{entry['name']}' was applied at strength {entry['strength']}: give a finite "
                          "strength (1.0 for LCM-LoRA)")
            continue
        largest = entry.get("largest")  # recorded on the model at apply time (lora.applied.record_applied)
        if largest:
            module, alpha, rank = largest["module"], largest["alpha"], largest["rank"]
            scaled.append((abs(entry["strength"] * alpha / rank), entry, module, alpha, rank))
    if scaled:
        size, entry, module, alpha, rank = max(scaled, key=lambda item: item[0])
        if size > 1.0:  # above W + 1·up·down: name it (smaller updates are the usual case and not worth naming)
            causes.append(f"the LoRA '{entry['name']}' has alpha {alpha:g} at rank {rank} in module '{module}' "
                          f"(scale alpha/rank × strength = {size:g}, the largest update on this model); an update "
                          "this large overflows the UNet: fix the file's alpha (published LoRAs use alpha <= rank) "
                          "or lower the strength")
    return causes


def _weight_causes(base_model) -> list[str]:
    module = getattr(base_model, "diffusion_model", None)
    if module is None:
        return []
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not _finite(tensor):
            return [f"the merged weight 'diffusion_model.{key}' holds NaN/Inf (the model file or a patch on it)"]
    return []


def explain_non_finite(model, x: torch.Tensor, extra_args: dict) -> str:
    """The causes found for a NaN/Inf step of a k-diffusion sampler run (``model`` is core's wrapped denoiser)."""
    guider = getattr(model, "inner_model", None)
    base_model = getattr(guider, "inner_model", None)
    causes = []
    if not _finite(x):
        causes.append("the input latent (noise + latent_image) already holds NaN/Inf: check the node that made it")
    cfg = getattr(guider, "cfg", None)
    if cfg is not None and not _finite(cfg):
        causes.append(f"cfg={cfg} is not a finite number: use 1.0 to 2.0 for LCM")
    causes += _sampling_causes(getattr(base_model, "model_sampling", None))
    causes += _lora_causes((extra_args or {}).get("model_options"))
    causes += _weight_causes(base_model)
    if not causes:
        causes.append("no non-finite input, constant, LoRA strength or weight found: the model overflows in its "
                      "compute precision; lower cfg, or run the UNet in bf16/fp32")
    return "; ".join(causes) + "."
