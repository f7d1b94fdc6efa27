"""A direct path for ComfyUI's per-step conditioning batch when there is a single plain conditioning.

Why. LCM samples at cfg 1: each step runs the model once on one positive conditioning. ComfyUI's
``comfy.samplers.calc_cond_batch`` is written for the general case (areas, masks, several conds, cond +
uncond batching sized by a free-memory query, hooks) and spends ~1 ms of host time per step on it — a
``cudaMemGetInfo`` + ``memory_stats`` query, zero/one-filled accumulators, a mask of ones, concatenations and
divisions by one — while an eager SD1.5 UNet step is ~21 ms of host time (docs/performance.md).

What. :func:`single_cond_batch` is installed through ComfyUI's public hook
``ModelPatcher.set_model_sampler_calc_cond_batch_function`` (``model_options["sampler_calc_cond_batch_function"]``,
read by ``comfy.samplers.sampling_function``). When the step has exactly one conditioning entry with no area,
mask, strength, timestep range, ControlNet, GLIGEN or hooks, and the model options carry no context windows,
model-function wrapper or calc-cond-batch wrappers, it calls ``BaseModel.apply_model`` directly with the same
inputs and the same ``transformer_options`` core builds; everything else goes to core's
``comfy.samplers.calc_cond_batch`` unchanged. Core's result for that case is ``(0 + out·1) / (1e-37 + 1)`` =
``out`` exactly in float32, so the direct path is bit-identical (tests/test_cond_batch.py compares both on a
real model, including the ``transformer_options`` the diffusion model receives).
"""
from __future__ import annotations

import comfy.patcher_extension
import comfy.samplers
import torch

# Keys of a processed conditioning that core's get_area_and_mult / _calc_cond_batch act on.
SPECIAL_COND_KEYS = frozenset({"default", "timestep_start", "timestep_end", "area", "mask", "control", "gligen",
                               "hooks"})
# model_options entries that change how the conditioning batch is run.
SPECIAL_MODEL_OPTIONS = frozenset({"context_handler", "model_function_wrapper"})


def _plain(cond: dict) -> bool:
    strength = cond.get("strength", 1.0)
    return (SPECIAL_COND_KEYS.isdisjoint(cond) and isinstance(strength, (int, float)) and float(strength) == 1.0
            and "model_conds" in cond and "uuid" in cond)


def single_plain_cond(conds: list, model_options: dict) -> tuple[int, dict] | None:
    """``(index, cond)`` when the batch is one plain conditioning entry (see module docstring), else None."""
    if not SPECIAL_MODEL_OPTIONS.isdisjoint(model_options):
        return None
    if comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, model_options,
                                                is_model_options=True):
        return None
    present = [(index, entries) for index, entries in enumerate(conds) if entries]
    if len(present) != 1 or len(present[0][1]) != 1:
        return None
    index, (cond,) = present[0]
    return (index, cond) if _plain(cond) else None


def _transformer_options(model, model_options: dict, index: int, cond: dict, timestep) -> dict:
    """The ``transformer_options`` core's ``_calc_cond_batch`` passes for a batch of this one conditioning."""
    options = model.current_patcher.apply_hooks(hooks=None)
    if "transformer_options" in model_options:
        options = comfy.patcher_extension.merge_nested_dicts(options, model_options["transformer_options"],
                                                             copy_dict1=False)
    options["cond_or_uncond"] = [index]
    options["uuids"] = [cond["uuid"]]
    options["sigmas"] = timestep
    return options


def direct_cond_batch(model, conds: list, x: torch.Tensor, timestep: torch.Tensor, model_options: dict,
                      index: int, cond: dict) -> list:
    """One model call for the single plain conditioning ``conds[index]``; zeros for the other entries (as core)."""
    model.current_patcher.prepare_state(timestep)
    conditioning = {name: value.process_cond(batch_size=x.shape[0], area=None)
                    for name, value in cond["model_conds"].items()}
    inputs = comfy.samplers.cond_cat([conditioning])
    inputs["transformer_options"] = _transformer_options(model, model_options, index, cond, timestep)
    output = model.apply_model(x, timestep, **inputs).to(x.dtype)
    return [output if i == index else torch.zeros_like(x) for i in range(len(conds))]


def single_cond_batch(args: dict) -> list:
    """``sampler_calc_cond_batch_function``: the direct path when it applies, core's ``calc_cond_batch`` otherwise."""
    conds, x, timestep = args["conds"], args["input"], args["sigma"]
    model, model_options = args["model"], args["model_options"]
    single = single_plain_cond(conds, model_options)
    if single is None:
        return comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)
    return direct_cond_batch(model, conds, x, timestep, model_options, *single)


def has_cond_batch_function(model_patcher) -> bool:
    """Whether the model already carries a calc-cond-batch function (ours or another node's)."""
    return "sampler_calc_cond_batch_function" in model_patcher.model_options


def install_single_cond_batch(model_patcher) -> bool:
    """Install :func:`single_cond_batch` on ``model_patcher`` (a clone the caller owns) unless another node already
    set a calc-cond-batch function (that one is kept: it may do more than batching). Returns True if installed."""
    if has_cond_batch_function(model_patcher):
        return False
    model_patcher.set_model_sampler_calc_cond_batch_function(single_cond_batch)
    return True
