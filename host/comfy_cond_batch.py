"""Which conditioning batches the opt-in real-time path (``comfy_fast_path``) may run as one direct model call.

The pack never installs a ``sampler_calc_cond_batch_function`` on a model: loaders, the mixer and LCM model
sampling change weights and the model-sampling object only, and core batches the conditioning as it always does
(issue 29: a copy of core's private ``_calc_cond_batch`` broke core's own KSampler on ComfyUI 0.33, whose
``prepare_state`` gained an argument). Only ``LCM Fast Path``, which the user adds to ask for speed, replays the
step as one captured model call; it asks :func:`plain_batch` whether the step's conditioning is one entry per
prompt (positive, and the negative at cfg ≠ 1) with no area, mask, strength, timestep range, GLIGEN or hooks (a
ControlNet only when shared by the entries), and model options with no context windows, model-function wrapper
or calc-cond-batch wrappers. Anything else falls back to core.
"""
from __future__ import annotations

import comfy.patcher_extension

# Keys of a processed conditioning that core's get_area_and_mult / _calc_cond_batch act on.
SPECIAL_COND_KEYS = frozenset({"default", "timestep_start", "timestep_end", "area", "mask", "control", "gligen",
                               "hooks"})
# model_options entries that change how the conditioning batch is run.
SPECIAL_MODEL_OPTIONS = frozenset({"context_handler", "model_function_wrapper"})


def _plain(cond: dict, allowed: frozenset = frozenset()) -> bool:
    strength = cond.get("strength", 1.0)
    return ((SPECIAL_COND_KEYS - allowed).isdisjoint(cond) and isinstance(strength, (int, float))
            and float(strength) == 1.0 and "model_conds" in cond and "uuid" in cond)


def _plain_options(model_options: dict) -> bool:
    """No model option that changes how core runs the conditioning batch (module docstring)."""
    return SPECIAL_MODEL_OPTIONS.isdisjoint(model_options) and not comfy.patcher_extension.get_all_wrappers(
        comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, model_options, is_model_options=True)


def plain_batch(conds: list, model_options: dict, control: bool = False) -> list[tuple[int, dict]] | None:
    """``[(index, cond), …]`` in the order core's ``_calc_cond_batch`` puts them in one model call, when every
    present entry of ``conds`` (``[positive, negative]``, the negative None at cfg 1) is one plain conditioning
    (see module docstring; with ``control``, a ``control`` entry is admitted when every entry carries the same
    one: core's ``can_concat_cond`` batches only those), else None. Core collects the runs cond first, then
    uncond, and batches them in reverse (``to_batch_temp.reverse()``): the uncond comes first in the batch,
    ``cond_or_uncond == [1, 0]``."""
    if not _plain_options(model_options):
        return None
    present = [(index, entries) for index, entries in enumerate(conds) if entries is not None]
    allowed = frozenset({"control"}) if control else frozenset()
    if not present or any(len(entries) != 1 or not _plain(entries[0], allowed) for _, entries in present):
        return None
    if len({id(entries[0].get("control")) for _, entries in present}) > 1:
        return None
    return [(index, entries[0]) for index, entries in reversed(present)]

