"""LCM and TCD as k-diffusion sampler functions for ``comfy.samplers.KSAMPLER``.

Contract (ComfyUI's ``comfy/k_diffusion/sampling.py``): ``fn(model, x, sigmas, extra_args, callback, disable,
**options)`` where ``model(x, sigma, **extra_args)`` returns the denoised latent and
``model.inner_model.inner_model`` is the ComfyUI ``BaseModel`` whose (possibly object-patched)
``model_sampling`` re-noises the latent. Fresh noise is seeded from ``extra_args["seed"]`` like core samplers.
The loops themselves are pure (``lcm_sampler.py``).
"""
from __future__ import annotations

import torch

from ..samplers.lcm_sampler import check_gamma, lcm_loop, seeded_noise_sampler, tcd_loop
from . import contract
from .comfy_finite import explain_non_finite
from .comfy_model_sampling import training_sigmas


def _parts(model, x, extra_args, noise_sampler):
    extra_args = {} if extra_args is None else extra_args
    base_model = contract.sampler_base_model(model)
    noise_sampler = noise_sampler or seeded_noise_sampler(x, extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])

    def denoise(latent, sigma):
        return model(latent, sigma * s_in, **extra_args)

    def explain():
        return explain_non_finite(model, x, extra_args)

    return base_model, base_model.model_sampling, noise_sampler, denoise, explain


@torch.no_grad()
def sample_lcm_exact(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """LCM multistep sampling (diffusers ``LCMScheduler`` semantics; boundary from the model's sampling)."""
    _, model_sampling, noise_sampler, denoise, explain = _parts(model, x, extra_args, noise_sampler)
    return lcm_loop(denoise, x, sigmas, noise_sampler, model_sampling.noise_scaling, callback, disable, explain)


@torch.no_grad()
def sample_tcd(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, gamma=0.3):
    """TCD sampling with γ (diffusers ``TCDScheduler`` with ``eta=gamma``)."""
    base_model, model_sampling, noise_sampler, denoise, explain = _parts(model, x, extra_args, noise_sampler)
    timestep_of, train_sigmas = tcd_tables(base_model)
    return tcd_loop(denoise, x, sigmas, noise_sampler, model_sampling.noise_scaling, timestep_of, train_sigmas,
                    check_gamma(gamma), callback, disable, explain)


def tcd_tables(base_model):
    """(timestep_of, train_sigmas) of TCD on ``base_model``: σ → its integer training timestep through the
    model's (possibly object-patched) ``model_sampling.timestep``, and σ at every training timestep."""
    model_sampling = base_model.model_sampling
    train_sigmas = training_sigmas(model_sampling, getattr(base_model, "model_config", None))

    def timestep_of(sigma):
        return int(model_sampling.timestep(sigma.reshape(1).to(model_sampling.sigmas.device)).item())

    return timestep_of, train_sigmas


contract.mark(sample_lcm_exact, "lcm")  # the fast path recognises the pack's loop by this marker, core's by identity
contract.mark(sample_tcd, "tcd")
