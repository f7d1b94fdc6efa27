"""The host side of the captured loops: per sampler family, what the host decides (the plan, part of the capture
key) and the step tensors loaded into static buffers before every replay.

Everything a loop would read from the device to branch on (core reads ``sigma_down == 0``, ``sigmas[i + 1] == 0``,
TCD's timesteps) is decided here, on the host, the way the eager sampler decides it, and every random draw the
eager sampler makes is made here, in the eager order, with the eager sampler's own generator rule:

* ``lcm`` (the pack's ``sample_lcm_exact``, core's ``sample_lcm``): a fresh draw where σ_{i+1} > 0;
* ``euler`` (core's ``sample_euler``; core's "ddim" is the same function with ``inpaint_options={"random": True}``):
  no draws;
* ``euler_ancestral`` (core's ``sample_euler_ancestral``, eta 1, s_noise 1): (σ_down, σ_up) of every step by
  core's ``get_ancestral_step`` on the sigma tensors (``contract.ancestral_step``), a draw where σ_down ≠ 0
  (core's branch), by core's ``default_noise_sampler`` (``contract.core_noise_sampler``: 0.8.0+ seeds + 1 on the
  CPU); a flow model (``CONST``), which core hands to ``sample_euler_ancestral_RF``, falls back;
* ``dpmpp_2m`` (core's ``sample_dpmpp_2m``): no draws; the first-order steps (the first, any to σ = 0);
* ``tcd`` (the pack's ``sample_tcd``, γ from ``extra_options``): the last steps and s = ⌊(1 − γ)·t'⌋ by
  ``lcm_sampler.tcd_schedule`` with the model's timesteps (part of the key with γ), σ_s of every step into a
  buffer, a draw at every step but the last where γ > 0, by the pack's ``seeded_noise_sampler``;
* a noise mask (inpainting): the mask (prepared by core to the latent's shape) and ``KSamplerX0Inpaint``'s noise
  (``contract.inpaint_noise``: core's "random" draw for "ddim") into buffers; models whose inpainting blend is not
  ``BaseModel``'s fall back (``contract.inpaint_scaling``).
"""
from __future__ import annotations

import torch

from ..samplers.fast_path import FastPathUnavailable
from ..samplers.fixed_loops import LoopPlan, draw_step_noise, fixed_plan
from ..samplers.lcm_sampler import check_gamma, seeded_noise_sampler, tcd_schedule
from . import contract
from .comfy_k_diffusion import tcd_tables

# The noise-sampler factory each re-noising sampler draws its fresh noise with (core's varies by version).
NOISE_SAMPLERS = {"pack lcm": seeded_noise_sampler, "pack tcd": seeded_noise_sampler,
                  "core lcm": contract.core_noise_sampler, "core euler_ancestral": contract.core_noise_sampler}
# What the message of an unsupported sampler lists (ComfyUI's sampler names; tcd is the pack's).
REPLAYED_SAMPLERS = "lcm, tcd, euler, euler_ancestral, dpmpp_2m, ddim"
TCD_DEFAULT_GAMMA = 0.3  # sample_tcd's default (host/comfy_k_diffusion.py)


def sampler_options_reason(sampler, kind: str) -> str | None:
    """Why the sampler's options change what the loop would compute (None: they do not). TCD's ``gamma`` is part
    of its plan; ``inpaint_options["random"]`` (core's "ddim") only chooses the inpainting noise."""
    extra = {name: value for name, value in (sampler.extra_options or {}).items()
             if not (kind == "pack tcd" and name == "gamma")}
    inpaint = {name: value for name, value in (sampler.inpaint_options or {}).items() if name != "random"}
    if extra or inpaint:
        return f"sampler options set ({', '.join(sorted({**extra, **inpaint}))})"
    return None


def loop_inputs(kind: str, family: str, sampler, guider, sigmas: torch.Tensor, sigma_list: list[float],
                noise: torch.Tensor, extra_args: dict, denoise_mask) -> tuple[LoopPlan, dict]:
    """(plan, step tensors) of one call: the tensors are ``step_noise`` and the family's and the mask's buffers."""
    base_model = guider.inner_model
    max_denoise = contract.sampler_max_denoise(sampler, guider, sigmas)
    values = {}
    masked = denoise_mask is not None
    if masked:
        contract.inpaint_scaling(base_model)  # ContactMismatch: a model-specific blend, core samples
    inpainting_noise = contract.inpaint_noise(sampler, noise, extra_args)  # before the sampler's draws, as core
    if masked:
        values.update(denoise_mask=denoise_mask, inpaint_noise=inpainting_noise)
    draws, branches = None, ()
    if family == "euler_ancestral":
        draws, values["ancestral"] = _ancestral(base_model, sigmas)
    elif family == "tcd":
        draws, branches, values["tcd_sigma_s"] = _tcd(sampler, base_model, sigmas, noise)
    plan = fixed_plan(family, sigma_list, max_denoise, draws, branches, masked)
    if plan.noise_draws:
        values["step_noise"] = draw_step_noise(noise.shape, noise.dtype, noise.device, extra_args.get("seed"),
                                               plan.noise_draws, NOISE_SAMPLERS[kind])
    else:  # the loop draws no noise: one unused row
        values["step_noise"] = torch.zeros((1, *noise.shape), dtype=noise.dtype, device=noise.device)
    return plan, values


def _ancestral(base_model, sigmas: torch.Tensor) -> tuple[tuple[bool, ...], torch.Tensor]:
    """(draw flags, (steps, 2) tensor of σ_down, σ_up) as core's ``sample_euler_ancestral`` computes them."""
    if contract.ancestral_runs_rf(base_model):
        raise FastPathUnavailable("core's euler_ancestral runs sample_euler_ancestral_RF on this flow model "
                                  "(CONST model sampling), which the fast path does not replay")
    rows = [contract.ancestral_step(sigmas[i], sigmas[i + 1]) for i in range(len(sigmas) - 1)]
    draws = tuple(not bool(sigma_down == 0) for sigma_down, _ in rows)  # core: ``if sigma_down == 0: x = denoised``
    return draws, torch.stack([torch.stack([torch.as_tensor(v, dtype=sigmas.dtype, device=sigmas.device)
                                            for v in row]) for row in rows])


def _tcd(sampler, base_model, sigmas: torch.Tensor, noise: torch.Tensor):
    """(draw flags, branches (γ, last steps, s), σ_s of every step) as the pack's ``sample_tcd`` decides them."""
    gamma = check_gamma((sampler.extra_options or {}).get("gamma", TCD_DEFAULT_GAMMA))
    timestep_of, train_sigmas = tcd_tables(base_model)
    is_last, s_indices = tcd_schedule(sigmas, timestep_of, gamma)
    sigma_s = torch.stack([train_sigmas[index].to(noise) for index in s_indices])  # tcd_loop: ``.to(x)``
    draws = tuple(not last and gamma > 0 for last in is_last)
    return draws, (gamma, tuple(is_last), tuple(s_indices)), sigma_s
