"""LCM boundary-condition scalings (pure torch, no ComfyUI).

Consistency models parameterise f(x, t) = c_skip(t)·x + c_out(t)·F(x, t) so that f(x, 0) = x
(Song et al. 2023, eq. 3; LCM, Luo et al. 2023, arXiv 2310.04378 §4.1; LCM-LoRA arXiv 2311.05556). The LCM
training scripts and diffusers' ``LCMScheduler.get_scalings_for_boundary_condition_discrete`` use

    s      = timestep_scaling · t           (timestep_scaling = 10)
    c_skip = σ_d² / (s² + σ_d²)             (σ_d = sigma_data = 0.5)
    c_out  = s / √(s² + σ_d²)

and denoised = c_out · x̂₀ + c_skip · x_t, where x_t is the variance-preserving sample √ᾱ_t·x₀ + √(1−ᾱ_t)·ε.
"""
from __future__ import annotations

import torch

DEFAULT_TIMESTEP_SCALING = 10.0
DEFAULT_SIGMA_DATA = 0.5


def boundary_condition_scalings(timestep: torch.Tensor, timestep_scaling: float = DEFAULT_TIMESTEP_SCALING,
                                sigma_data: float = DEFAULT_SIGMA_DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(c_skip, c_out)`` for integer-valued training timesteps ``timestep``."""
    scaled = timestep.to(torch.float32) * timestep_scaling
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out
