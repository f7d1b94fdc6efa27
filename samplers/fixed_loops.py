"""The fixed-shape sampling loops the fast path captures: one per sampler family, pure torch, no ComfyUI.

Each loop runs on static buffers (``fast_path.StaticBuffers``: the initial noise, the latent, the sigmas, the
pre-drawn noise of every re-noising step, the conditioning) and a :class:`LoopPlan` -- everything the host decides
(the step count, which steps draw fresh noise, the start-noise rule, a family's branches): the plan is part of the
capture key, the buffers' values are not. The arithmetic of every loop is the eager sampler's, operation for
operation (ComfyUI's ``KSAMPLER.sample`` around the k-diffusion sampler function, or the pack's loop), so a graph
captured from the eager kernels gives the eager latent bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .fast_path import FastPathUnavailable, StaticBuffers
from .lcm_sampler import seeded_noise_sampler

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (x, seed) -> draw(sigma, sigma_next): the noise-sampler factories of ComfyUI and the pack.
NoiseSamplerFactory = Callable[[torch.Tensor, "int | None"], Callable]


@dataclass(frozen=True)
class LoopPlan:
    """What the host decides for one LCM loop: it is part of the capture key."""

    steps: int
    renoise: tuple[bool, ...]  # step i re-noises to σ_{i+1} (σ_{i+1} > 0)
    max_denoise: bool  # the initial noise scaling: √(1+σ₀²)·n (full denoise) or σ₀·n, plus the latent

    @property
    def noise_draws(self) -> int:
        return sum(self.renoise)


def lcm_plan(sigmas: list[float], max_denoise: bool) -> LoopPlan:
    """The plan of an LCM loop over ``sigmas`` (host floats, descending, usually ending in 0)."""
    if len(sigmas) < 2:
        raise FastPathUnavailable(f"{len(sigmas)} sigma(s): nothing to sample")
    return LoopPlan(len(sigmas) - 1, tuple(s > 0 for s in sigmas[1:]), bool(max_denoise))



NoiseScaling = Callable[..., torch.Tensor]


def lcm_fixed_loop(denoise: Denoiser, noise_scaling: NoiseScaling, inverse_noise_scaling: NoiseScaling,
                   buffers: StaticBuffers, plan: LoopPlan) -> dict[str, torch.Tensor]:
    """LCM multistep sampling on static buffers ``noise``, ``latent_image``, ``sigmas``, ``step_noise``.

    The arithmetic of ComfyUI's ``KSAMPLER.sample`` around the pack's ``sample_lcm_exact`` (or core's
    ``sample_lcm``): x = noise_scaling(σ₀, n, latent, max_denoise); per step x̂₀ = denoise(x, σ_i·1);
    x ← noise_scaling(σ_{i+1}, z_i, x̂₀) where the plan re-noises, else x ← x̂₀; the result is
    inverse_noise_scaling(σ_last, x). Returns the result and every step's (x, x̂₀) for the progress callback.
    """
    sigmas = buffers["sigmas"]
    x = noise_scaling(sigmas[0], buffers["noise"], buffers["latent_image"], plan.max_denoise)
    s_in = x.new_ones([x.shape[0]])
    outputs = {}
    draw = 0
    for i in range(plan.steps):
        denoised = denoise(x, sigmas[i] * s_in)
        outputs[f"x_{i}"], outputs[f"denoised_{i}"] = x, denoised
        x = denoised
        if plan.renoise[i]:
            x = noise_scaling(sigmas[i + 1], buffers["step_noise"][draw], x)
            draw += 1
    outputs["samples"] = inverse_noise_scaling(sigmas[-1], x)
    return outputs


def euler_fixed_loop(denoise: Denoiser, noise_scaling: NoiseScaling, inverse_noise_scaling: NoiseScaling,
                     buffers: StaticBuffers, plan: LoopPlan) -> dict[str, torch.Tensor]:
    """Euler on static buffers ``noise``, ``latent_image``, ``sigmas`` (Karras et al. 2022, Algorithm 2 without
    churn): the arithmetic of ComfyUI's ``KSAMPLER.sample`` around ``k_diffusion.sampling.sample_euler`` with
    ``s_churn=0`` (identical on 0.3.75, 0.8.0, 0.33.0): x = noise_scaling(σ₀, n, latent, max_denoise); per step
    x̂₀ = denoise(x, σ_i·1), d = (x − x̂₀)/σ_i (``to_d``: σ_i appended to x's dims), x ← x + d·(σ_{i+1} − σ_i);
    the result is inverse_noise_scaling(σ_last, x). Any sigma list (split schedules for img2img included): the
    values live in the ``sigmas`` buffer, only their count is captured."""
    sigmas = buffers["sigmas"]
    x = noise_scaling(sigmas[0], buffers["noise"], buffers["latent_image"], plan.max_denoise)
    s_in = x.new_ones([x.shape[0]])
    outputs = {}
    for i in range(plan.steps):
        sigma_hat = sigmas[i]
        denoised = denoise(x, sigma_hat * s_in)
        d = (x - denoised) / sigma_hat[(...,) + (None,) * (x.ndim - sigma_hat.ndim)]
        outputs[f"x_{i}"], outputs[f"denoised_{i}"] = x, denoised
        x = x + d * (sigmas[i + 1] - sigma_hat)
    outputs["samples"] = inverse_noise_scaling(sigmas[-1], x)
    return outputs


# The fixed-arithmetic loops by sampler family, and whether the family re-noises (draws fresh noise) per step.
FIXED_LOOPS = {"lcm": lcm_fixed_loop, "euler": euler_fixed_loop}


def fixed_plan(family: str, sigmas: list[float], max_denoise: bool) -> LoopPlan:
    """The plan of a ``family`` loop ("lcm" re-noises where σ_{i+1} > 0; "euler" never draws noise)."""
    plan = lcm_plan(sigmas, max_denoise)
    return plan if family == "lcm" else LoopPlan(plan.steps, (False,) * plan.steps, plan.max_denoise)


def draw_step_noise(shape, dtype, device, seed: int | None, draws: int,
                    make_noise_sampler: NoiseSamplerFactory = seeded_noise_sampler) -> torch.Tensor:
    """The fresh noise of every re-noising step, drawn in the order the eager loop draws it, by the eager
    sampler's own noise-sampler factory ``make_noise_sampler(x, seed)`` (ComfyUI's ``default_noise_sampler`` for
    core's ``lcm``; the default, a generator on ``device`` seeded with ``seed``, is the pack's
    ``seeded_noise_sampler``; ``seed=None`` draws from the global generator). The factory matters: ComfyUI 0.8.0
    seeds its CPU generator with ``seed + 1``, 0.3.75 with ``seed``. Shape ``(draws, *shape)``; ``draws=0``
    gives one unused row."""
    template = torch.empty(shape, dtype=dtype, device=device)
    draw = make_noise_sampler(template, seed)
    rows = [draw(None, None) for _ in range(draws)]
    return torch.stack(rows) if rows else torch.zeros((1, *shape), dtype=dtype, device=device)
