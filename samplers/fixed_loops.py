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
NoiseScaling = Callable[..., torch.Tensor]
S_NOISE = 1.0  # core's sample_euler_ancestral default (KSamplerSelect passes no options)


@dataclass(frozen=True)
class LoopPlan:
    """What the host decides for one loop: it is part of the capture key."""

    steps: int
    renoise: tuple[bool, ...]  # step i draws a fresh noise row (the eager loop's draws, in order)
    max_denoise: bool  # the initial noise scaling: √(1+σ₀²)·n (full denoise) or σ₀·n, plus the latent
    branches: tuple = ()  # the family's other host decisions (DPM++ 2M: first-order steps; TCD: γ, s, last steps)
    masked: bool = False  # a noise mask (inpainting): core's KSamplerX0Inpaint blend around every model call

    @property
    def noise_draws(self) -> int:
        return sum(self.renoise)


def lcm_plan(sigmas: list[float], max_denoise: bool) -> LoopPlan:
    """The plan of an LCM loop over ``sigmas`` (host floats, descending, usually ending in 0)."""
    if len(sigmas) < 2:
        raise FastPathUnavailable(f"{len(sigmas)} sigma(s): nothing to sample")
    return LoopPlan(len(sigmas) - 1, tuple(s > 0 for s in sigmas[1:]), bool(max_denoise))


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


def euler_ancestral_fixed_loop(denoise: Denoiser, noise_scaling: NoiseScaling, inverse_noise_scaling: NoiseScaling,
                               buffers: StaticBuffers, plan: LoopPlan) -> dict[str, torch.Tensor]:
    """Euler ancestral (eta 1, s_noise 1) on static buffers ``noise``, ``latent_image``, ``sigmas``,
    ``step_noise``, ``ancestral``: the arithmetic of ``k_diffusion.sampling.sample_euler_ancestral`` (the same code
    on ComfyUI 0.3.75, 0.8.0, 0.33.0). Row i of ``ancestral`` is (σ_down, σ_up) of step i as core's
    ``get_ancestral_step(σ_i, σ_{i+1}, eta=1)`` computes them (σ_up = min(σ_{i+1}, √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²)),
    σ_down = √(σ_{i+1}² − σ_up²), on the sigmas' device, by the host before the replay: ``min`` is a host branch).
    Per step x̂₀ = denoise(x, σ_i·1); where σ_down = 0 (the plan: no draw) x ← x̂₀, else d = (x − x̂₀)/σ_i and
    x ← x + d·(σ_down − σ_i) + z_i·s_noise·σ_up, z_i the step's pre-drawn noise."""
    sigmas, ancestral = buffers["sigmas"], buffers["ancestral"]
    x = noise_scaling(sigmas[0], buffers["noise"], buffers["latent_image"], plan.max_denoise)
    s_in = x.new_ones([x.shape[0]])
    outputs, draw = {}, 0
    for i in range(plan.steps):
        denoised = denoise(x, sigmas[i] * s_in)
        outputs[f"x_{i}"], outputs[f"denoised_{i}"] = x, denoised
        if not plan.renoise[i]:
            x = denoised
            continue
        sigma_down, sigma_up = ancestral[i][0], ancestral[i][1]
        d = (x - denoised) / sigmas[i][(...,) + (None,) * x.ndim]
        dt = sigma_down - sigmas[i]
        x = x + d * dt + buffers["step_noise"][draw] * S_NOISE * sigma_up
        draw += 1
    outputs["samples"] = inverse_noise_scaling(sigmas[-1], x)
    return outputs



def dpmpp_2m_fixed_loop(denoise: Denoiser, noise_scaling: NoiseScaling, inverse_noise_scaling: NoiseScaling,
                        buffers: StaticBuffers, plan: LoopPlan) -> dict[str, torch.Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2) on static buffers ``noise``,
    ``latent_image``, ``sigmas``: the arithmetic of ``k_diffusion.sampling.sample_dpmpp_2m`` (the same code on
    ComfyUI 0.3.75, 0.8.0, 0.33.0), t = −log σ, h = t_{i+1} − t_i. The first step and a step to σ = 0 (the plan's
    ``branches``: core's ``old_denoised is None or sigmas[i + 1] == 0``) are first order,
    x ← (σ(t_{i+1})/σ(t_i))·x − expm1(−h)·x̂₀; the others use D = (1 + 1/(2r))·x̂₀ − (1/(2r))·x̂₀_prev with
    r = h_{i−1}/h in place of x̂₀."""
    sigmas = buffers["sigmas"]
    x = noise_scaling(sigmas[0], buffers["noise"], buffers["latent_image"], plan.max_denoise)
    s_in = x.new_ones([x.shape[0]])
    outputs, old_denoised = {}, None

    def sigma_fn(t):
        return t.neg().exp()

    def t_fn(sigma):
        return sigma.log().neg()

    for i in range(plan.steps):
        denoised = denoise(x, sigmas[i] * s_in)
        outputs[f"x_{i}"], outputs[f"denoised_{i}"] = x, denoised
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if plan.branches[i]:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    outputs["samples"] = inverse_noise_scaling(sigmas[-1], x)
    return outputs


def tcd_fixed_loop(denoise: Denoiser, noise_scaling: NoiseScaling, inverse_noise_scaling: NoiseScaling,
                   buffers: StaticBuffers, plan: LoopPlan) -> dict[str, torch.Tensor]:
    """TCD (arXiv 2402.19159, eq. 11) on static buffers ``noise``, ``latent_image``, ``sigmas``, ``step_noise``,
    ``tcd_sigma_s``: the arithmetic of ``lcm_sampler.tcd_loop`` (the pack's ``sample_tcd``) inside
    ``KSAMPLER.sample``. ``tcd_sigma_s[i]`` is σ_s of step i (the training sigma at s = ⌊(1 − γ)·t'⌋, the
    timesteps read on the host: ``lcm_sampler.tcd_schedule``); the plan's branches are (γ, the last steps).
    Per step ε̂ = (x − x̂₀)/σ_i, x ← x̂₀ + σ_s·ε̂; a last step (σ_{i+1} = 0) returns x/√(1 + σ_s²), the others
    (γ > 0) re-noise: x ← noise_scaling(√max(σ_{i+1}² − σ_s², 0), z_i, x)."""
    sigmas, sigma_s_all = buffers["sigmas"], buffers["tcd_sigma_s"]
    gamma, last = plan.branches[0], plan.branches[1]
    x = noise_scaling(sigmas[0], buffers["noise"], buffers["latent_image"], plan.max_denoise)
    s_in = x.new_ones([x.shape[0]])
    outputs, draw = {}, 0
    for i in range(plan.steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma * s_in)
        outputs[f"x_{i}"], outputs[f"denoised_{i}"] = x, denoised
        eps = (x - denoised) / sigma
        sigma_s = sigma_s_all[i]
        x = denoised + sigma_s * eps
        if last[i]:
            x = x / (1.0 + sigma_s ** 2) ** 0.5
        elif gamma > 0:
            extra = (sigma_next.to(x) ** 2 - sigma_s ** 2).clamp(min=0) ** 0.5
            x = noise_scaling(extra, buffers["step_noise"][draw], x)
            draw += 1
    outputs["samples"] = inverse_noise_scaling(sigmas[-1], x)
    return outputs


def masked_denoiser(denoise: Denoiser, scale_latent_inpaint: Callable[..., torch.Tensor],
                    buffers: StaticBuffers) -> Denoiser:
    """x̂₀ of an inpainting step as core's ``KSamplerX0Inpaint.__call__`` computes it (``comfy/samplers.py``, the
    same arithmetic on 0.3.75, 0.8.0, 0.33.0), on static buffers ``denoise_mask`` (m, prepared to the latent's
    shape by core), ``inpaint_noise`` (``model_k.noise``) and ``latent_image``:
    x ← x·m + scale_latent_inpaint(σ, n, latent)·(1 − m); out = denoise(x, σ); out ← out·m + latent·(1 − m)."""
    def denoise_masked(x, sigma):
        denoise_mask, latent_image = buffers["denoise_mask"], buffers["latent_image"]
        latent_mask = 1. - denoise_mask
        x = x * denoise_mask + scale_latent_inpaint(x=x, sigma=sigma, noise=buffers["inpaint_noise"],
                                                    latent_image=latent_image) * latent_mask
        out = denoise(x, sigma)
        return out * denoise_mask + latent_image * latent_mask

    return denoise_masked


# The fixed-arithmetic loops by sampler family.
FIXED_LOOPS = {"lcm": lcm_fixed_loop, "euler": euler_fixed_loop, "euler_ancestral": euler_ancestral_fixed_loop,
               "dpmpp_2m": dpmpp_2m_fixed_loop, "tcd": tcd_fixed_loop}


def fixed_plan(family: str, sigmas: list[float], max_denoise: bool, draws: tuple[bool, ...] | None = None,
               branches: tuple = (), masked: bool = False) -> LoopPlan:
    """The plan of a ``family`` loop over ``sigmas`` (host floats). "lcm" re-noises where σ_{i+1} > 0; "euler"
    and "dpmpp_2m" never draw noise (DPM++ 2M's branches: the first-order steps, the first and any to σ = 0);
    "euler_ancestral" and "tcd" draw where ``draws`` says (decided by the host from core's σ_down, TCD's γ and
    last steps), with the family's ``branches``."""
    plan = lcm_plan(sigmas, max_denoise)
    if family == "lcm":
        renoise = plan.renoise
    else:
        renoise = tuple(draws) if draws is not None else (False,) * plan.steps
    if len(renoise) != plan.steps:
        raise FastPathUnavailable(f"{len(renoise)} draw flags for {plan.steps} steps")
    if family == "dpmpp_2m":
        branches = tuple(i == 0 or sigmas[i + 1] == 0 for i in range(plan.steps))
    return LoopPlan(plan.steps, renoise, plan.max_denoise, tuple(branches), bool(masked))


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
