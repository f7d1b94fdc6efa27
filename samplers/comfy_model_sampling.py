"""LCM model sampling for ComfyUI models: the distillation timestep grid plus the boundary condition.

The only module of ``samplers`` that imports ComfyUI (its ``comfy.model_sampling`` math, no UI code).
Compared with core's ``ModelSamplingDiscrete(sampling="lcm")`` it

* takes ``original_inference_steps`` (core hard-codes 50), ``timestep_scaling`` (core: 10) and
  ``sigma_data`` (core: 0.5) as parameters;
* works for eps *and* v-prediction models: x̂₀ comes from the model's own prediction type;
* applies the skip term to the variance-preserving sample exactly as diffusers' ``LCMScheduler`` does:
  in k-diffusion units x = x_t / √ᾱ_t = x_t·√(1+σ²), so ``c_skip · x_t = c_skip · x / √(1+σ²)``
  (core multiplies c_skip by x; the two differ by ≤ 7e-6 relative at t ≥ 19).
"""
from __future__ import annotations

import comfy.model_sampling
import torch

from .boundary import DEFAULT_SIGMA_DATA, DEFAULT_TIMESTEP_SCALING, boundary_condition_scalings

PREDICTION_TYPES = {
    "eps": comfy.model_sampling.EPS,
    "v_prediction": comfy.model_sampling.V_PREDICTION,
}


class LCMDiscreteGrid(comfy.model_sampling.ModelSamplingDiscrete):
    """Discrete sampling restricted to the LCM distillation grid.

    With k = num_train_timesteps // original_inference_steps the grid holds timesteps
    t_i = i·k + (k − 1), i = 0 … original_inference_steps − 1 (k = 20 → 19, 39, …, 999), exactly the
    ``lcm_origin_timesteps`` of diffusers' ``LCMScheduler.set_timesteps``.
    """

    original_inference_steps = 50

    def __init__(self, model_config=None, zsnr=None):
        super().__init__(model_config, zsnr=zsnr)
        self.skip_steps = self.num_timesteps // self.original_inference_steps
        grid_timesteps = torch.arange(self.original_inference_steps) * self.skip_steps + (self.skip_steps - 1)
        self.set_sigmas(self.sigmas[grid_timesteps])

    def timestep(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma.to(self.log_sigmas.device) - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).view(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep):
        position = ((timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps)
        position = torch.clamp(position, min=0, max=len(self.sigmas) - 1)
        low, high, frac = position.floor().long(), position.ceil().long(), position.frac()
        log_sigma = (1 - frac) * self.log_sigmas[low] + frac * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)


class LCMBoundary:
    """Mixin: wraps the prediction type's x̂₀ in the consistency boundary condition."""

    timestep_scaling = DEFAULT_TIMESTEP_SCALING
    lcm_sigma_data = DEFAULT_SIGMA_DATA

    def calculate_denoised(self, sigma, model_output, model_input):
        x0 = super().calculate_denoised(sigma, model_output, model_input)
        timestep = self.timestep(sigma)
        c_skip, c_out = boundary_condition_scalings(timestep, self.timestep_scaling, self.lcm_sigma_data)
        shape = sigma.shape[:1] + (1,) * (model_output.ndim - 1)
        sigma = sigma.view(shape)
        vp_sample = model_input / (1.0 + sigma ** 2) ** 0.5
        return c_out.view(shape).to(x0) * x0 + c_skip.view(shape).to(x0) * vp_sample


def make_lcm_model_sampling(model_config, prediction_type: str = "eps", original_inference_steps: int = 50,
                            timestep_scaling: float = DEFAULT_TIMESTEP_SCALING,
                            sigma_data: float = DEFAULT_SIGMA_DATA, zsnr: bool = False):
    """Build a ComfyUI model-sampling object for LCM with the given constants."""
    prediction = PREDICTION_TYPES[prediction_type]
    attributes = {
        "original_inference_steps": int(original_inference_steps),
        "timestep_scaling": float(timestep_scaling),
        "lcm_sigma_data": float(sigma_data),
    }
    sampling_class = type("LCMModelSampling", (LCMBoundary, LCMDiscreteGrid, prediction), attributes)
    return sampling_class(model_config, zsnr=zsnr)


def prediction_type_of(model_patcher) -> str:
    """Read the prediction type ("eps" / "v_prediction") of a ComfyUI model from its model type."""
    import comfy.model_base

    model_type = model_patcher.model.model_type
    if model_type == comfy.model_base.ModelType.V_PREDICTION:
        return "v_prediction"
    if model_type == comfy.model_base.ModelType.EPS:
        return "eps"
    raise ValueError(f"model type {model_type} is not an eps or v-prediction model")
