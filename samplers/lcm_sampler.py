"""LCM multistep and TCD sampling loops in k-diffusion units (pure torch, no ComfyUI).

Units. ComfyUI's k-diffusion samplers carry x = x_t / √ᾱ_t (variance-exploding form) with
σ_t = √((1 − ᾱ_t)/ᾱ_t); diffusers' schedulers carry the variance-preserving x_t. A denoiser returns x̂₀
(for LCM: the boundary-conditioned c_out·x̂₀ + c_skip·x_t, see ``boundary.py``) and
ε̂ = (x − x̂₀)/σ holds for eps *and* v-prediction models, because x_t = √ᾱ·x̂₀ + √(1−ᾱ)·ε̂ in both.

LCM multistep sampling (LCM, arXiv 2310.04378, Algorithm 1; diffusers ``LCMScheduler.step``):
    x̂₀ = f(x_t, t);   x_{t'} = √ᾱ_{t'}·x̂₀ + √(1−ᾱ_{t'})·z   ⇔   x' = x̂₀ + σ_{t'}·z   (k-units),
the last step returns x̂₀.

TCD strategic stochastic sampling (TCD, arXiv 2402.19159, eq. 11; diffusers ``TCDScheduler.step``), γ ∈ [0, 1]:
    s = ⌊(1 − γ)·t'⌋,   x_s = √ᾱ_s·x̂₀ + √(1−ᾱ_s)·ε̂                  ⇔  x_s = x̂₀ + σ_s·ε̂   (k-units)
    x_{t'} = √(ᾱ_{t'}/ᾱ_s)·x_s + √(1 − ᾱ_{t'}/ᾱ_s)·z   (γ > 0)      ⇔  x' = x_s + √(σ_{t'}² − σ_s²)·z
γ = 0 is a deterministic DDIM step; the last step (t' = 0 in diffusers) returns the VP sample x_s at s = 0,
i.e. x_s/√(1 + σ_s²) in k-units.

Re-noising goes through a ``renoise(sigma, noise, latent)`` callable, the model's own
``model_sampling.noise_scaling`` in ComfyUI (latent + σ·noise for eps and v-prediction).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import trange

from ..errors import SamplingError
from .finite import FiniteWatch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Renoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def seeded_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Fresh N(0, I) noise shaped like ``x`` from a generator seeded with ``seed`` (ComfyUI's default rule)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(seed))

    def draw(sigma, sigma_next):
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return draw


def _report(callback, i, x, sigma, denoised) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


@torch.no_grad()
def lcm_loop(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler,
             renoise: Renoise, callback=None, disable: bool | None = None,
             explain: Callable[[], str] | None = None) -> torch.Tensor:
    """LCM multistep sampling over ``sigmas`` (descending, last 0 for a full run); see the module docstring.

    Raises :class:`~samplers.finite.NonFiniteSamplingError` (cause from ``explain()``) if a step is not finite.
    """
    renoise_after = (sigmas[1:] > 0).tolist()  # one device read for the branch tests, not one per step
    watch = FiniteWatch(x, explain, "LCM sampling")
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = denoise(x, sigmas[i])
        _report(callback, i, x, sigmas[i], denoised)
        x = denoised
        if renoise_after[i]:
            x = renoise(sigmas[i + 1], noise_sampler(sigmas[i], sigmas[i + 1]), denoised)
        watch.see(i, x)
    watch.check(len(sigmas) - 1)
    return x


def tcd_intermediate_timestep(next_timestep: int, gamma: float) -> int:
    """s = ⌊(1 − γ)·t'⌋, computed in float32 exactly as diffusers' ``TCDScheduler.step`` does."""
    return int(torch.floor((1 - gamma) * torch.tensor(int(next_timestep), dtype=torch.long)).item())


def check_gamma(gamma: float) -> float:
    """TCD's γ (diffusers ``eta``) must lie in [0, 1]."""
    if not 0.0 <= float(gamma) <= 1.0:
        raise SamplingError(f"gamma={gamma} is outside [0, 1]; use 0.3 for TCD-LoRA, 1.0 for Hyper-SD one-step.")
    return float(gamma)


def tcd_schedule(sigmas: torch.Tensor, timestep_of: Callable[[torch.Tensor], int],
                 gamma: float) -> tuple[list[bool], list[int]]:
    """(last steps, s of every step) of a TCD loop over ``sigmas``: step i is last where σ_{i+1} = 0 (t' = 0),
    and s = ⌊(1 − γ)·t'⌋ with t' = ``timestep_of(σ_{i+1})`` the next training timestep. Read from the device
    once, before the loop (not a sync per step); the fast path's capture key holds both."""
    is_last = [not positive for positive in (sigmas[1:] > 0).tolist()]
    next_timesteps = [0 if last else timestep_of(sigmas[i + 1]) for i, last in enumerate(is_last)]
    return is_last, [tcd_intermediate_timestep(timestep, gamma) for timestep in next_timesteps]


@torch.no_grad()
def tcd_loop(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler,
             renoise: Renoise, timestep_of: Callable[[torch.Tensor], int], train_sigmas: torch.Tensor,
             gamma: float = 0.3, callback=None, disable: bool | None = None,
             explain: Callable[[], str] | None = None) -> torch.Tensor:
    """TCD sampling over ``sigmas``; ``train_sigmas[t]`` is σ at every training timestep t (for σ_s).

    ``timestep_of(sigma)`` maps a schedule sigma back to its integer training timestep. A step that is not
    finite raises :class:`~samplers.finite.NonFiniteSamplingError` (cause from ``explain()``).
    """
    gamma = check_gamma(gamma)
    is_last, s_indices = tcd_schedule(sigmas, timestep_of, gamma)
    watch = FiniteWatch(x, explain, "TCD sampling")
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        _report(callback, i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        last = is_last[i]
        sigma_s = train_sigmas[s_indices[i]].to(x)
        x = denoised + sigma_s * eps
        if last:
            x = x / (1.0 + sigma_s ** 2) ** 0.5
        elif gamma > 0:
            extra = (sigma_next.to(x) ** 2 - sigma_s ** 2).clamp(min=0) ** 0.5
            x = renoise(extra, noise_sampler(sigma, sigma_next), x)
        watch.see(i, x)
    watch.check(len(sigmas) - 1)
    return x
