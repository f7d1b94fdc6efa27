"""LCM / TCD inference timesteps (pure Python + numpy): the rule of diffusers ≥ 0.24 ``LCMScheduler``.

Latent consistency distillation (LCM, arXiv 2310.04378 §4.2 "skipping-step"; LCM-LoRA arXiv 2311.05556)
trains the consistency function only on a coarse grid of the teacher's 1000 training timesteps. With
N = ``original_inference_steps`` (50 for every published LCM-LoRA) and k = T // N (T = 1000 → k = 20):

    origin grid   = [k·i − 1 for i = 1 … ⌊N·strength⌋]          (19, 39, …, 999)
    n-step path   = reversed(origin grid)[⌊linspace(0, len, n, endpoint=False)⌋]

so 1 step → [999], 2 → [999, 499], 4 → [999, 759, 499, 259]. ``strength`` (ComfyUI's ``denoise``) truncates
the grid from the top, which is how img2img starts from a partly noised image. TCD (arXiv 2402.19159) uses the
same grid (``TCDScheduler`` with its configured ``original_inference_steps``).

Custom timesteps follow diffusers' checks: strictly descending, inside [0, T); entries off the distillation
grid are allowed (e.g. DMD2's [999, 749, 499, 249]) but reported as warnings; ``strength`` keeps the last
⌊n·strength⌋ of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SamplingError

DEFAULT_ORIGINAL_INFERENCE_STEPS = 50
DEFAULT_NUM_TRAIN_TIMESTEPS = 1000


class LCMScheduleError(SamplingError):
    """The requested LCM schedule cannot be built; the message names the value and the fix."""


@dataclass(frozen=True)
class CustomSchedule:
    """Validated custom timesteps (after ``strength``) and the warnings diffusers would log for them."""

    timesteps: list[int]
    warnings: list[str] = field(default_factory=list)


def _check_original_steps(original_inference_steps: int, num_train_timesteps: int) -> None:
    if not 1 <= int(original_inference_steps) <= num_train_timesteps:
        raise LCMScheduleError(
            f"original_inference_steps={original_inference_steps} must be in 1..{num_train_timesteps}; "
            f"use {DEFAULT_ORIGINAL_INFERENCE_STEPS} for published LCM-LoRAs.")


def _check_strength(strength: float) -> None:
    if not 0.0 < float(strength) <= 1.0:
        raise LCMScheduleError(f"denoise/strength={strength} must be in (0, 1]; use 1.0 for text-to-image.")


def lcm_origin_timesteps(original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS, strength: float = 1.0,
                         num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The ascending distillation grid [k−1, 2k−1, …] with ⌊N·strength⌋ entries, k = T // N."""
    _check_original_steps(original_inference_steps, num_train_timesteps)
    _check_strength(strength)
    skip = num_train_timesteps // int(original_inference_steps)
    count = int(int(original_inference_steps) * float(strength))
    return [i * skip - 1 for i in range(1, count + 1)]


def max_lcm_steps(original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS, strength: float = 1.0) -> int:
    """How many steps the grid allows at this strength: ⌊N·strength⌋ (0 means no step remains)."""
    return int(int(original_inference_steps) * float(strength))


def lcm_timesteps(steps: int, original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS,
                  strength: float = 1.0, num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The descending LCM inference timesteps for ``steps`` steps (diffusers ``LCMScheduler.set_timesteps``).

    Raises :class:`LCMScheduleError` for steps < 1, steps above the (strength-truncated) grid, or a strength so
    low that no grid entry remains; diffusers raises for the same cases.
    """
    if int(steps) < 1:
        raise LCMScheduleError(f"steps={steps} must be at least 1 (LCM-LoRA: 4 to 8).")
    origin = lcm_origin_timesteps(original_inference_steps, strength, num_train_timesteps)
    if not origin:
        raise LCMScheduleError(
            f"denoise/strength={strength} leaves no LCM step: ⌊{original_inference_steps}·{strength}⌋ = 0 grid "
            f"entries. Raise denoise to at least {1 / int(original_inference_steps):.4g}.")
    if int(steps) > len(origin):
        raise LCMScheduleError(
            f"steps={steps} exceeds the {len(origin)} timesteps of the LCM grid at original_inference_steps="
            f"{original_inference_steps} and denoise={strength}; "
            f"{_more_steps_advice(int(steps), int(original_inference_steps), float(strength), len(origin))}")
    descending = np.asarray(origin[::-1])
    indices = np.floor(np.linspace(0, len(descending), num=int(steps), endpoint=False)).astype(np.int64)
    return [int(t) for t in descending[indices]]


def _more_steps_advice(steps: int, original_steps: int, strength: float, allowed: int) -> str:
    """What can be done when ``steps`` exceed the grid: only the changes that are possible (denoise ≤ 1,
    original_inference_steps ≤ 1000) are offered; a larger grid is off the distillation grid of a LoRA
    distilled on ``original_steps``."""
    options = [f"lower steps to ≤ {allowed}" if allowed else "no step count fits"]
    needed_denoise = steps / original_steps
    if strength < needed_denoise <= 1.0:
        options.append(f"raise denoise to ≥ {needed_denoise:.4g}")
    needed_grid = math.ceil(steps / strength)
    while int(needed_grid * strength) < steps:  # the grid keeps ⌊N·strength⌋ entries
        needed_grid += 1
    if needed_grid <= DEFAULT_NUM_TRAIN_TIMESTEPS:
        options.append(f"use original_inference_steps ≥ {needed_grid} (LCM Model Sampling node), only for a model "
                       f"distilled on that grid (published LCM-LoRAs: {DEFAULT_ORIGINAL_INFERENCE_STEPS})")
    return " or ".join(options) + "."


def check_custom_timesteps(timesteps: list[int], original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS,
                           strength: float = 1.0,
                           num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS) -> CustomSchedule:
    """Validate user timesteps like diffusers does; return the strength-truncated list and warnings.

    Errors: empty, non-integer, outside [0, T), not strictly descending, nothing left after ``strength``.
    Warnings (returned; the caller logs them once): a first timestep other than T−1 at strength 1, entries off the
    distillation grid, more entries than ``original_inference_steps``.
    """
    _check_original_steps(original_inference_steps, num_train_timesteps)
    _check_strength(strength)
    values = _as_int_list(timesteps)
    _check_custom_range_and_order(values, num_train_timesteps)
    grid = set(lcm_origin_timesteps(original_inference_steps, 1.0, num_train_timesteps))
    warnings = []
    if float(strength) == 1.0 and values[0] != num_train_timesteps - 1:
        warnings.append(f"the first custom timestep is {values[0]}, not {num_train_timesteps - 1}: sampling does "
                        "not start from pure noise.")
    off_grid = [t for t in values if t not in grid]
    if off_grid:
        warnings.append(f"custom timesteps {off_grid} are not on the distillation grid of original_inference_steps="
                        f"{original_inference_steps} (k={num_train_timesteps // int(original_inference_steps)}); "
                        "the model was not distilled there.")
    if len(values) > int(original_inference_steps):
        warnings.append(f"{len(values)} custom timesteps exceed original_inference_steps={original_inference_steps}.")
    kept = min(int(len(values) * float(strength)), len(values))
    if kept < 1:
        raise LCMScheduleError(f"denoise/strength={strength} keeps none of the {len(values)} custom timesteps; "
                               f"raise denoise to at least {1 / len(values):.4g}.")
    return CustomSchedule(values[len(values) - kept:], warnings)


def parse_timesteps(text: str) -> list[int]:
    """Parse a comma/space separated list such as ``"999, 759, 499, 259"``; empty text gives []."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError as error:
        raise LCMScheduleError(f"custom timesteps {text!r} must be integers separated by commas, "
                               "e.g. '999, 759, 499, 259'.") from error


def _as_int_list(timesteps) -> list[int]:
    values = list(timesteps)
    if not values:
        raise LCMScheduleError("custom timesteps are empty; give e.g. '999, 759, 499, 259' or leave the field "
                               "empty to use steps.")
    if any(int(t) != t for t in values):
        raise LCMScheduleError(f"custom timesteps {values} must be integers.")
    return [int(t) for t in values]


def _check_custom_range_and_order(values: list[int], num_train_timesteps: int) -> None:
    out_of_range = [t for t in values if not 0 <= t < num_train_timesteps]
    if out_of_range:
        raise LCMScheduleError(f"custom timesteps {out_of_range} are outside 0..{num_train_timesteps - 1}.")
    for previous, current in zip(values, values[1:], strict=False):
        if current >= previous:
            raise LCMScheduleError(f"custom timesteps must be strictly descending; {current} follows {previous}.")
