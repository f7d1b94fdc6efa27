"""Sampling presets of the step-distilled accelerators, as their authors' diffusers setups specify (pure).

A :class:`Preset` is one recipe of the accelerator registry (``accelerators/registry.py``): the sampler, the timestep
rule, the model sampling and the cfg. Each cites the card it follows; ``guidance_scale=0`` there (no classifier-free guidance) is ComfyUI's cfg 1.0.
diffusers' scheduler configs come from the base pipelines (``from_config(pipe.scheduler.config, …)``):
SD1.5/SDXL's ``beta_schedule="scaled_linear"``, 0.00085-0.012, ``set_alpha_to_one=False``.

Timestep rules (T = 1000 training timesteps):

* ``lcm-grid``: diffusers' LCM/TCD rule on the distillation grid (``timesteps.lcm_timesteps``; 4 → 999, 759, 499, 259).
* ``trailing``: diffusers' ``timestep_spacing="trailing"`` (DDIM/Euler/Euler-ancestral):
  ``round(arange(T, 0, -T/n)) − 1`` (4 → 999, 749, 499, 249; 8 → 999, 874, …, 124).
* ``fixed``: the card's explicit list (DMD2: 999, 749, 499, 249).

Image-to-image (``denoise`` = diffusers' ``strength`` < 1) keeps the last ``min(⌊n·strength⌋, n)`` timesteps of the
list (``StableDiffusionImg2ImgPipeline.get_timesteps``; ``LCMScheduler``/``TCDScheduler`` cut their grid instead).
DDIM's step lands at ``t − T//n`` (``DDIMScheduler.step``; ``ᾱ₀`` at the end, ``set_alpha_to_one=False``), which is not
always the next listed timestep (n = 12: 916 → 833 while the next timestep is 832): :func:`ddim_landing_timesteps`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import accelerators
from ..accelerators import Recipe
from .timesteps import LCMScheduleError, check_custom_timesteps, lcm_timesteps

NUM_TRAIN_TIMESTEPS = 1000
SAMPLERS = ("lcm", "tcd", "ddim", "euler", "euler_ancestral")
MODEL_SAMPLINGS = ("lcm", "tcd", "discrete", "lcm-full", "x0")


class PresetError(ValueError):
    """A preset cannot be used as asked (steps, denoise, kind); the message names the value and the fix."""


# A preset is one recipe of the registry (``accelerators.records.Recipe``: sampler, timestep rule, model sampling,
# cfg, source, gamma, steps, timesteps, img2img, beta schedule, ...).
Preset = Recipe


def presets() -> dict[str, Preset]:
    """Every preset KSampler (LCM) runs, by name, read from the registry now."""
    return accelerators.recipes()


PRESETS: dict[str, Preset] = presets()
PRESET_NAMES = tuple(PRESETS)


def steps_from_name(text: str) -> int | None:
    """The step count a published name carries ("Hyper-SDXL-8steps-lora" → 8, "sdxl_lightning_4step" → 4)."""
    return accelerators.steps_from_name(text)


def preset_for_kind(kind: str, file_name: str = "") -> Preset | None:
    """The preset of an accelerator kind that its published file name selects (a variant: PCM's NormalCFG or
    LCM-like), with the step count the name carries for a trailing recipe; None: no preset."""
    preset = accelerators.recipe_for(kind, file_name)
    if preset is None or preset.runs_on not in ("ksampler-lcm", "flow"):
        return None
    steps = steps_from_name(file_name) if preset.steps is None and preset.schedule == "trailing" else None
    return replace(preset, steps=steps) if steps else preset


def trailing_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """diffusers' ``timestep_spacing="trailing"`` (DDIM / Euler / Euler-ancestral ``set_timesteps``)."""
    if not 1 <= int(steps) <= num_train_timesteps:
        raise PresetError(f"steps={steps} must be in 1..{num_train_timesteps}.")
    ratio = num_train_timesteps / int(steps)
    return [int(t) for t in np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1]


def strength_cut(timesteps: list[int], strength: float) -> list[int]:
    """The img2img pipelines' rule: keep the last ``min(⌊n·strength⌋, n)`` timesteps."""
    if not 0.0 < float(strength) <= 1.0:
        raise PresetError(f"denoise={strength} must be in (0, 1]; 1.0 for text-to-image.")
    kept = min(int(len(timesteps) * float(strength)), len(timesteps))
    if kept < 1:
        raise PresetError(f"denoise={strength} keeps none of the {len(timesteps)} timesteps {timesteps}; raise "
                          f"denoise to at least {1 / len(timesteps):.4g} or use more steps.")
    return list(timesteps[len(timesteps) - kept:])


def ddim_landing_timesteps(timesteps: list[int], steps: int,
                           num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """Where each DDIM step lands: ``max(t − T//n, 0)`` (``ᾱ₀`` for the last one: ``set_alpha_to_one=False``)."""
    skip = num_train_timesteps // int(steps)
    return [max(int(t) - skip, 0) for t in timesteps]


def preset_timesteps(preset: Preset, steps: int, denoise: float = 1.0,
                     original_inference_steps: int = 50) -> list[int]:
    """The timesteps ``preset`` samples at for ``steps`` steps and ``denoise`` (module docstring)."""
    if preset.steps is not None and int(steps) != preset.steps and preset.schedule == "fixed":
        raise PresetError(f"the {preset.name} preset samples at its published timesteps {list(preset.timesteps)} "
                          f"({preset.steps} steps), not {steps}; set steps to {preset.steps} or use preset 'custom'.")
    if not preset.img2img and float(denoise) < 1.0:
        raise PresetError(f"the {preset.name} preset is a text-to-image recipe (its card gives no image-to-image "
                          "use); set denoise to 1.0 or use preset 'custom'.")
    try:
        if preset.schedule == "lcm-grid":
            return lcm_timesteps(int(steps), original_inference_steps, float(denoise))
        if preset.schedule == "fixed":
            return check_custom_timesteps(list(preset.timesteps), original_inference_steps, float(denoise)).timesteps
    except LCMScheduleError as error:
        raise PresetError(f"{preset.name} preset: {error}") from error
    return strength_cut(trailing_timesteps(int(steps)), float(denoise))


@dataclass(frozen=True)
class Choice:
    """What the KSampler uses after merging a preset with the node's inputs, and why (one line per field)."""

    preset: Preset | None
    sampler: str
    gamma: float
    cfg: float
    steps: int
    reasons: tuple[str, ...]


def choose(preset: Preset | None, why: str, sampler: str, gamma: float, cfg: float, steps: int,
           defaults: dict) -> Choice:
    """Merge ``preset`` with the node's inputs: an input that differs from its default (``defaults``) wins."""
    if preset is None:
        return Choice(None, sampler, gamma, cfg, steps, (f"no preset ({why}): the node's inputs as given",))
    reasons = [f"preset {preset.name} ({why}); source: {preset.source}"]

    def pick(field_name, given, preset_value):
        if preset_value is None:
            return given
        if given != defaults[field_name] and given != preset_value:
            reasons.append(f"{field_name} {given} from the node's input (the preset has {preset_value})")
            return given
        return preset_value

    chosen_sampler = pick("sampler", sampler, preset.sampler)
    chosen_gamma = pick("gamma", gamma, preset.gamma if chosen_sampler == "tcd" else None)
    chosen_cfg = pick("cfg", cfg, preset.cfg)
    chosen_steps = pick("steps", steps, preset.steps)
    if preset.cfg_range and not preset.cfg_range[0] <= chosen_cfg <= preset.cfg_range[1]:
        low, high = preset.cfg_range
        reasons.append(f"warning: cfg {chosen_cfg:g} is outside the {low:g}-{high:g} its authors give for "
                       f"{preset.name}")
    if preset.steps is not None and chosen_steps != preset.steps and preset.schedule != "fixed":
        reasons.append(f"warning: the file was distilled for {preset.steps} steps; sampling {chosen_steps}")
    return Choice(preset, chosen_sampler, float(chosen_gamma), float(chosen_cfg), int(chosen_steps), tuple(reasons))
