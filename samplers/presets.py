"""Sampling presets of the step-distilled accelerators, as their authors' diffusers setups specify (pure).

A :class:`Preset` names the sampler, the timestep rule, the model sampling and the cfg of one recipe. Each
cites the card it follows; ``guidance_scale=0`` there (no classifier-free guidance) is ComfyUI's cfg 1.0.
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

import re
from dataclasses import dataclass, replace

import numpy as np

from .timesteps import LCMScheduleError, check_custom_timesteps, lcm_timesteps

NUM_TRAIN_TIMESTEPS = 1000
SAMPLERS = ("lcm", "tcd", "ddim", "euler", "euler_ancestral")
MODEL_SAMPLINGS = ("lcm", "tcd", "discrete", "lcm-full", "x0")


class PresetError(ValueError):
    """A preset cannot be used as asked (steps, denoise, kind); the message names the value and the fix."""


@dataclass(frozen=True)
class Preset:
    """One recipe. ``steps``: the step count the file was distilled for (None: any; the node's steps are used)."""

    name: str
    sampler: str
    schedule: str  # "lcm-grid" | "trailing" | "fixed"
    model_sampling: str  # see MODEL_SAMPLINGS
    cfg: float
    source: str
    gamma: float = 0.3
    steps: int | None = None
    timesteps: tuple[int, ...] = ()
    img2img: bool = True
    note: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("lcm", "lcm", "lcm-grid", "lcm", 1.0,
           "latent-consistency/lcm-lora-sdv1-5 / -sdxl cards: LCMScheduler, 4-8 steps, guidance_scale 1-2"),
    Preset("flash", "lcm", "lcm-grid", "lcm", 1.0,
           "jasperai/flash-sd, flash-sdxl cards: LCMScheduler (its timestep_spacing='trailing' is not read by "
           "LCMScheduler.set_timesteps), 4 steps, guidance_scale 0"),
    Preset("tcd", "tcd", "lcm-grid", "tcd", 1.0,
           "h1t/TCD-SD15-LoRA, TCD-SDXL-LoRA cards: TCDScheduler, eta (gamma) 0.3, 4 steps, guidance_scale 0",
           gamma=0.3),
    Preset("hyper-sd-unified", "tcd", "lcm-grid", "tcd", 1.0,
           "ByteDance/Hyper-SD card, unified LoRA (Hyper-SD*-1step-lora): TCDScheduler, eta 1.0, 1-8 steps, "
           "guidance_scale 0", gamma=1.0),
    Preset("hyper-sd", "ddim", "trailing", "discrete", 1.0,
           "ByteDance/Hyper-SD card, n-step LoRAs: DDIMScheduler(timestep_spacing='trailing'), the file's step "
           "count, guidance_scale 0"),
    Preset("hyper-sd-cfg", "ddim", "trailing", "discrete", 5.0,
           "ByteDance/Hyper-SD CFG-preserved LoRAs (8/12 steps): DDIMScheduler trailing at the file's step count; "
           "cfg 5 from the card's 5-8 range", note="the cfg range is from the team's notes of the card"),
    Preset("lightning", "euler", "trailing", "discrete", 1.0,
           "ByteDance/SDXL-Lightning card: EulerDiscreteScheduler(timestep_spacing='trailing'), the file's step "
           "count, guidance_scale 0"),
    Preset("lightning-x0", "euler", "trailing", "x0", 1.0,
           "ByteDance/SDXL-Lightning card, 1-step UNet (sdxl_lightning_1step_unet_x0): EulerDiscreteScheduler "
           "trailing with prediction_type='sample', 1 step, guidance_scale 0", steps=1,
           img2img=False),
    Preset("dmd2", "lcm", "fixed", "lcm-full", 1.0,
           "tianweiy/DMD2 card, 4-step LoRA/UNet: LCMScheduler with timesteps [999, 749, 499, 249], "
           "guidance_scale 0", steps=4, timesteps=(999, 749, 499, 249), img2img=False,
           note="text-to-image only: the card shows no image-to-image, and diffusers' LCMScheduler with custom "
                "timesteps and strength < 1 re-noises its last step (num_inference_steps is not reset)"),
    Preset("dmd2-unet-1step", "lcm", "fixed", "lcm-full", 1.0,
           "tianweiy/DMD2 card, 1-step UNet: LCMScheduler with timesteps [399], guidance_scale 0",
           steps=1, timesteps=(399,), img2img=False),
    Preset("hyper-sd-unet-1step", "lcm", "fixed", "lcm-full", 1.0,
           "ByteDance/Hyper-SD card, 1-step SDXL UNet: LCMScheduler with timesteps [800], guidance_scale 0",
           steps=1, timesteps=(800,), img2img=False),
    Preset("turbo", "euler_ancestral", "trailing", "discrete", 1.0,
           "stabilityai/sdxl-turbo card and diffusers' SDXL-Turbo docs: EulerAncestralDiscreteScheduler with "
           "timestep_spacing='trailing', 1-4 steps, guidance_scale 0"),
)}
# Presets a model records through its LoRA kind; the others (checkpoints) are picked by name on the KSampler.
KIND_PRESETS = {kind: kind for kind in ("lcm", "flash", "tcd", "hyper-sd-unified", "hyper-sd", "hyper-sd-cfg",
                                        "lightning", "dmd2")}
PRESET_NAMES = tuple(PRESETS)
STEPS_IN_NAME = re.compile(r"(?:^|[^0-9])(\d{1,2})[-_ ]?steps?(?:[^a-z]|$)", re.I)


def steps_from_name(text: str) -> int | None:
    """The step count a published name carries ("Hyper-SDXL-8steps-lora" → 8, "sdxl_lightning_4step" → 4)."""
    match = STEPS_IN_NAME.search(text)
    return int(match[1]) if match else None


def preset_for_kind(kind: str, file_name: str = "") -> Preset | None:
    """The preset of an accelerator kind, with the step count its published file name carries; None: no preset."""
    name = KIND_PRESETS.get(kind)
    if name is None:
        return None
    preset = PRESETS[name]
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
    if preset.steps is not None and chosen_steps != preset.steps and preset.schedule != "fixed":
        reasons.append(f"warning: the file was distilled for {preset.steps} steps; sampling {chosen_steps}")
    return Choice(preset, chosen_sampler, float(chosen_gamma), float(chosen_cfg), int(chosen_steps), tuple(reasons))
