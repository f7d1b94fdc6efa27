"""Deterministic DDIM (η = 0) on trailing timesteps in k-diffusion units (pure torch, no ComfyUI).

diffusers' ``DDIMScheduler.step`` (Song et al., arXiv 2010.02502, eq. 12 with σ_t = 0) at timestep t of an
n-step schedule lands at ``t_land = t − T//n`` (``ᾱ₀`` below 0: ``set_alpha_to_one=False``):

    x̂₀ = f(x_t, t),  ε̂ = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t),  x_land = √ᾱ_land·x̂₀ + √(1−ᾱ_land)·ε̂.

In k-units (x = x_t/√ᾱ_t, σ = √((1−ᾱ)/ᾱ), ε̂ = (x − x̂₀)/σ) the landing sample is
``x_vp = (x̂₀ + σ_land·ε̂)/√(1+σ_land²)``. The next model call is at the next *listed* timestep, whose σ need not be
σ_land (trailing n = 12: 916 → lands at 833, next call at 832); the k-unit latent handed on is
``x_vp·√(1+σ_next²)``, so that the model's input scaling ``x/√(1+σ_next²)`` sees exactly diffusers' latent.
The last step returns ``x_vp`` (the sample at ``ᾱ₀``, what diffusers returns). When σ_land = σ_next the step is
the plain Euler/DDIM update ``x̂₀ + σ_next·ε̂``.
"""
from __future__ import annotations

import torch
from tqdm.auto import trange

from ..errors import SamplingError
from .finite import FiniteWatch
from .lcm_sampler import Denoiser, _report


@torch.no_grad()
def ddim_loop(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, land_sigmas: torch.Tensor,
              callback=None, disable: bool | None = None, explain=None) -> torch.Tensor:
    """DDIM (η = 0) over ``sigmas`` (last 0); ``land_sigmas[i]`` is σ at step i's landing timestep.

    A non-finite step raises :class:`~samplers.finite.NonFiniteSamplingError` (cause from ``explain()``)."""
    if len(land_sigmas) != len(sigmas) - 1:
        raise SamplingError(f"{len(land_sigmas)} landing sigmas for {len(sigmas) - 1} DDIM steps; give one per step.")
    is_last = [not positive for positive in (sigmas[1:] > 0).tolist()]
    watch = FiniteWatch(x, explain, "DDIM sampling")
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma = sigmas[i]
        denoised = denoise(x, sigma)
        _report(callback, i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        land = land_sigmas[i].to(x)
        x_vp = (denoised + land * eps) / (1.0 + land ** 2) ** 0.5
        x = x_vp if is_last[i] else x_vp * (1.0 + sigmas[i + 1].to(x) ** 2) ** 0.5
        watch.see(i, x)
    watch.check(len(sigmas) - 1)
    return x
