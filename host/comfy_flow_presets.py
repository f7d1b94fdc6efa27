"""KSampler (LCM) presets of the rectified-flow families (FLUX.1, SD3, Qwen-Image, Wan 2.1): core's own sampling,
set up as the accelerator's record says (``runs_on="flow"`` recipes, ``accelerators/registry.py``).

What runs is what core's nodes run for the recipe, so the image is core's:

* model sampling: the model's own flow sampling; where the recipe has a ``shift`` (Qwen-Image-Lightning: 3), a clone
  with ``ModelSamplingDiscreteFlow`` + ``CONST`` at that shift and multiplier 1 -- the object core's
  ModelSamplingAuraFlow node patches in (``comfy_extras/nodes_model_advanced.py``);
* sigmas: ``comfy.samplers.calculate_sigmas`` with the recipe's scheduler (``normal`` for Hyper-SD3, ``simple`` for
  the others), and for denoise < 1 core KSampler's rule (``steps / denoise`` steps, the last ``steps + 1`` sigmas);
* sampler: core's Euler (``sample_euler``), started as core starts it;
* guidance: FLUX reads it from the conditioning (core's FluxGuidance node); core's default when none is set is 3.5,
  the Hyper-FLUX / FLUX.1-Turbo-Alpha cards' value, so the preset leaves the conditioning alone and says which.

``tests/test_accel_family_parity.py`` shows these recipes equal the authors' diffusers setups;
``tests/test_accel_flow_presets.py`` that the preset's latent equals core's KSampler (+ ModelSamplingAuraFlow) on the
same inputs.
"""
from __future__ import annotations

import comfy.model_sampling
import comfy.samplers
import torch

from .. import accelerators
from ..samplers.presets import Choice, PresetError
from . import contract
from .comfy_apply import FAMILY_NAMES, model_family
from .comfy_clone_cache import reused_clone
from .comfy_model_sampling import lcm_patched_clone


class FlowShiftSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """The model sampling core's ModelSamplingAuraFlow node builds (discrete flow, CONST, a shift, multiplier 1)."""


def check_flow_model(model_patcher, choice: Choice) -> str:
    """The model's family, after refusing a flow preset on another family or a non-flow model (``PresetError``)."""
    preset = choice.preset
    record = accelerators.get(accelerators.recipe_kind(preset.name) or "")
    family = model_family(model_patcher)
    sampling = model_patcher.get_model_object("model_sampling")
    if record is not None and family not in record.families:
        raise PresetError(f"the {preset.name} preset is for {record.title} on "
                          f"{', '.join(FAMILY_NAMES.get(f, f) for f in record.families)} models; this model is "
                          f"{FAMILY_NAMES.get(family, family)}. Pick the preset of the accelerator applied to it "
                          "(auto), or custom.")
    if not isinstance(sampling, comfy.model_sampling.CONST):
        raise PresetError(f"the {preset.name} preset samples a rectified-flow model; this model samples with "
                          f"{type(sampling).__name__}. Pick auto or custom.")
    if choice.sampler != "euler":
        raise PresetError(f"the {preset.name} preset runs core's euler; sampler {choice.sampler} (the LCM/TCD loops "
                          "of SD models) does not apply: leave the sampler at its default.")
    return family


def flow_model(model_patcher, shift: float | None):
    """The model with the recipe's shift (a reused clone), or the model itself when the recipe has none."""
    if shift is None:
        return model_patcher

    def make(model):
        sampling = FlowShiftSampling(model.model.model_config)
        sampling.set_parameters(shift=float(shift), multiplier=1.0)
        return lcm_patched_clone(model, sampling)

    return reused_clone(model_patcher, ("flow_shift", float(shift)), make)


def flow_sigmas(model_sampling, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """Core KSampler's sigmas (``comfy.samplers.KSampler.set_steps``): ``scheduler`` at ``steps``, or for
    ``denoise`` < 1 the last ``steps + 1`` sigmas of ``int(steps / denoise)`` steps."""
    if not 0.0 < float(denoise) <= 1.0:
        raise PresetError(f"denoise={denoise} must be in (0, 1]; 1.0 for text-to-image.")
    total = int(steps / float(denoise)) if float(denoise) < 1.0 else int(steps)
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, total).cpu()
    return sigmas[-(int(steps) + 1):]


def plan_flow_sampling(model_patcher, choice: Choice, denoise: float) -> tuple[object, torch.Tensor, object, str]:
    """``(model, sigmas, SAMPLER, report)`` of a ``runs_on="flow"`` preset (the module docstring's recipe)."""
    preset = choice.preset
    family = check_flow_model(model_patcher, choice)
    model = flow_model(model_patcher, preset.shift)
    sampling = model.get_model_object("model_sampling")
    scheduler = (preset.scheduler.split("/")[-1].strip() or "simple")
    sigmas = flow_sigmas(sampling, scheduler, choice.steps, denoise)
    sampler = comfy.samplers.KSAMPLER(contract.require_core_k_sampler("sample_euler"))
    shift = (f"shift {preset.shift:g} (as core's ModelSamplingAuraFlow)" if preset.shift is not None else
             f"the model's own ({type(sampling).__name__}, shift {float(getattr(sampling, 'shift', 1.0)):g})")
    guidance = (f"; guidance: the conditioning's (FluxGuidance), core's default {preset.guidance:g} = the card's "
                "when none is set" if preset.guidance is not None else "")
    lines = ["KSampler (LCM): " + "; ".join(choice.reasons),
             f"core sampling of {FAMILY_NAMES.get(family, family)}: sampler euler, scheduler {scheduler}, model "
             f"sampling: {shift}, sigmas {[round(float(s), 4) for s in sigmas]}, cfg {choice.cfg:g}, steps "
             f"{choice.steps}, denoise {float(denoise):g}{guidance}"]
    return model, sigmas, sampler, "\n".join(lines)
