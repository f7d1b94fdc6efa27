"""The registry's recipes for the families beyond SD (``runs_on="flow"``: core's sampling, as the record's
``scheduler`` says, with its ``shift``; the KSampler (LCM) preset runs exactly that: tests/test_accel_flow_presets.py)
equal their authors' diffusers scheduler setup (issue 25, item 3).

Pure math, like ``test_accel_parity``: both sides run the same fixed stand-in for the transformer (a velocity
``v(x, σ)``: these families are rectified-flow models) from the same noise. Core's side is what its KSampler runs:
the family's model sampling (``comfy.model_base.model_sampling`` of the family's ``comfy.supported_models`` class;
with the recipe's shift, the ``ModelSamplingDiscreteFlow`` + ``CONST`` pair that core's ModelSamplingAuraFlow node
builds), ``comfy.samplers.calculate_sigmas`` with the recipe's scheduler, and ``sample_euler``. The diffusers side is
the pipeline's loop over ``FlowMatchEulerDiscreteScheduler`` configured as the authors run it:

* Hyper-SD3: ``StableDiffusion3Pipeline``'s scheduler (SD3's ``shift=3.0``), ``set_timesteps(n)`` -- timesteps
  ``linspace(1000, 1000·σ_min, n)``, which is core's **normal** scheduler, not simple (simple differs by up to 0.49 in
  σ at 4 steps; the record says normal since this test);
* Hyper-FLUX / FLUX.1-Turbo-Alpha: ``FluxPipeline`` at 1024×1024 (``sigmas=linspace(1, 1/n, n)``, ``mu =
  calculate_shift(4096) = 1.15``), core's Flux sampling (its default ``shift`` 1.15 is that μ) with simple;
* Qwen-Image-Lightning: the card's scheduler config (``base_shift = max_shift = log 3``, exponential time shift:
  shift 3 at every resolution) and ``QwenImagePipeline``'s sigmas, core's ModelSamplingAuraFlow shift 3 with simple.

The Wan recipes have no diffusers setup in the registry (their cards give ComfyUI / their own scripts): not compared,
and the records say so.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from lcm_lora_pack import accelerators
from lcm_lora_pack.devkit.host import prepare_import

prepare_import()

import comfy.k_diffusion.sampling as k_sampling  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402

SHAPE = (1, 16, 8, 8)
TOLERANCE = 1e-5
QWEN_LIGHTNING_CONFIG = {"base_image_seq_len": 256, "base_shift": math.log(3), "max_image_seq_len": 8192,
                         "max_shift": math.log(3), "shift": 1.0, "shift_terminal": None,
                         "time_shift_type": "exponential", "use_dynamic_shifting": True}
FLUX_DEV_CONFIG = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                   "shift": 3.0, "use_dynamic_shifting": True}


def _velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear stand-in for the transformer's velocity prediction."""
    return torch.tanh(x) * (0.5 + sigma) + 0.1 * x - 0.2


def _diffusers_sd3(steps: int):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(steps)
    return scheduler


def _diffusers_flux(steps: int):
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_DEV_CONFIG)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=calculate_shift(64 * 64))
    return scheduler


def _diffusers_qwen(steps: int):
    scheduler = FlowMatchEulerDiscreteScheduler(**QWEN_LIGHTNING_CONFIG)
    mu = calculate_shift(64 * 64, 256, 8192, math.log(3), math.log(3))
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler


# (recipe, published file, core class, core model type, diffusers setup)
CASES = [
    ("hyper-sd3-4step", "Hyper-SD3-4steps-CFG-lora.safetensors", "SD3", "FLOW", _diffusers_sd3),
    ("hyper-sd3-8step", "Hyper-SD3-8steps-CFG-lora.safetensors", "SD3", "FLOW", _diffusers_sd3),
    ("hyper-sd3-16step", "Hyper-SD3-16steps-CFG-lora.safetensors", "SD3", "FLOW", _diffusers_sd3),
    ("hyper-flux", "Hyper-FLUX.1-dev-8steps-lora.safetensors", "Flux", "FLUX", _diffusers_flux),
    ("hyper-flux", "Hyper-FLUX.1-dev-16steps-lora.safetensors", "Flux", "FLUX", _diffusers_flux),
    ("flux-turbo-alpha", "FLUX.1-Turbo-Alpha.safetensors", "Flux", "FLUX", _diffusers_flux),
    ("qwen-image-lightning", "Qwen-Image-Lightning-4steps-V1.0.safetensors", "QwenImage", "FLOW", _diffusers_qwen),
    ("qwen-image-lightning", "Qwen-Image-Lightning-8steps-V1.1.safetensors", "QwenImage", "FLOW", _diffusers_qwen),
]


def _core_model_sampling(class_name: str, model_type: str, shift: float | None):
    """The model sampling core's KSampler uses for the family, with the recipe's shift applied as core's
    ModelSamplingAuraFlow node does (``ModelSamplingDiscreteFlow`` + ``CONST``, multiplier 1)."""
    settings = dict(getattr(comfy.supported_models, class_name).sampling_settings)
    kind = comfy.model_base.ModelType[model_type]
    if shift is not None:
        settings, kind = {"shift": shift, "multiplier": 1.0}, comfy.model_base.ModelType.FLOW
    config = type("Config", (), {"sampling_settings": settings})()
    return comfy.model_base.model_sampling(config, kind)


def _steps(recipe, file_name: str) -> int:
    return recipe.steps or accelerators.steps_from_name(file_name)


@pytest.mark.parametrize(("name", "file_name", "class_name", "model_type", "setup"), CASES)
def test_core_recipe_equals_the_authors_diffusers_setup(name, file_name, class_name, model_type, setup):
    kind = accelerators.recipe_kind(name)
    recipe = accelerators.recipe_for(kind, file_name)
    assert recipe.name == name and recipe.runs_on == "flow" and recipe.sampler == "euler"
    steps = _steps(recipe, file_name)
    sampling = _core_model_sampling(class_name, model_type, recipe.shift)
    scheduler_name = recipe.scheduler.split("/")[-1].strip()
    sigmas = comfy.samplers.calculate_sigmas(sampling, scheduler_name, steps).float()
    reference = setup(steps)
    torch.testing.assert_close(sigmas, reference.sigmas.float(), rtol=0, atol=TOLERANCE)

    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))

    def denoiser(x, sigma, **_):  # what core's CONST model sampling makes of a velocity: x0 = x − σ·v
        return x - sigma.reshape(-1, 1, 1, 1) * _velocity(x, sigma.reshape(-1, 1, 1, 1))

    ours = k_sampling.sample_euler(denoiser, noise.clone(), sigmas, disable=True)
    x = noise.clone()
    for index, timestep in enumerate(reference.timesteps):
        sigma = reference.sigmas[index].reshape(1, 1, 1, 1)
        x = reference.step(_velocity(x, sigma), timestep, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=TOLERANCE, atol=TOLERANCE)


def test_every_core_recipe_is_compared_or_says_why():
    """Each family recipe is in :data:`CASES` or its note says it has no diffusers setup to compare with."""
    compared = {name for name, *_ in CASES}
    for record in accelerators.records():
        for recipe in record.recipes:
            if recipe.runs_on in ("flow", "core") and recipe.name not in compared:
                assert "no diffusers scheduler setup" in recipe.note, recipe.name
