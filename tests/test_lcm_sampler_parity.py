"""Pure-math parity: the pack's LCM / TCD loops on its ComfyUI model sampling equal diffusers' schedulers.

Both sides run the same fake "UNet" (a fixed nonlinear function of x_t and t, read as eps or v) and the same
noise: diffusers draws from a seeded generator inside ``step``; the pack's noise sampler pops the same sequence
pre-drawn from an identically seeded generator. Units: the pack runs in k-diffusion units
x = x_t/√ᾱ_t and starts like ComfyUI (txt2img: noise·√(1+σ₀²); img2img: latent + σ₀·noise).
"""
from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler, TCDScheduler
from harness.fake_unet import SHAPE, fake_unet, pack_denoiser
from lcm_lora_pack.host.comfy_model_sampling import make_lcm_model_sampling, schedule_sigmas
from lcm_lora_pack.samplers.lcm_sampler import lcm_loop, tcd_loop
from lcm_lora_pack.samplers.timesteps import lcm_timesteps

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "v_prediction": "v_prediction"}
SEED = 1234
TOLERANCE = 1e-5


def _popping_noise_sampler(count):
    generator = torch.Generator().manual_seed(SEED)
    noises = [torch.randn(SHAPE, generator=generator) for _ in range(count)]
    return lambda sigma, sigma_next: noises.pop(0)


def _inputs(strength):
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(SHAPE, generator=generator)
    init = torch.randn(SHAPE, generator=generator) * 0.8
    return noise, init


def _pack_start(sigmas, noise, init, strength):
    if strength == 1.0:
        return noise * (1.0 + sigmas[0] ** 2) ** 0.5
    return init + sigmas[0] * noise


def _diffusers_run(scheduler, noise, init, strength, step_kwargs):
    timesteps = scheduler.timesteps
    latents = noise if strength == 1.0 else scheduler.add_noise(init, noise, timesteps[:1])
    generator = torch.Generator().manual_seed(SEED)
    for t in timesteps:
        latents = scheduler.step(fake_unet(latents, t.view(1).expand(SHAPE[0])), t, latents,
                                 generator=generator, return_dict=False, **step_kwargs)[0]
    return latents


def _assert_close(ours, reference):
    relative = ((ours - reference).norm() / reference.norm()).item()
    assert relative < TOLERANCE, relative
    assert torch.allclose(ours, reference, rtol=TOLERANCE, atol=TOLERANCE * reference.abs().max().item())


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("original_steps", [50, 25])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("steps", range(1, 9))
def test_lcm_equals_diffusers_lcm_scheduler(prediction, original_steps, strength, steps):
    scheduler = LCMScheduler(original_inference_steps=original_steps, timestep_scaling=10.0,
                             prediction_type=DIFFUSERS_PREDICTION[prediction], **SD_BETAS)
    scheduler.set_timesteps(steps, original_inference_steps=original_steps, strength=strength)
    noise, init = _inputs(strength)
    reference = _diffusers_run(scheduler, noise, init, strength, {})

    model_sampling = make_lcm_model_sampling(None, prediction, original_steps)
    timesteps = lcm_timesteps(steps, original_steps, strength)
    assert timesteps == scheduler.timesteps.tolist()
    sigmas = schedule_sigmas(model_sampling, timesteps)
    x = _pack_start(sigmas, noise, init, strength)
    ours = lcm_loop(pack_denoiser(model_sampling), x, sigmas, _popping_noise_sampler(steps),
                    model_sampling.noise_scaling, disable=True)
    _assert_close(ours, reference)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("original_steps, strength", [(50, 1.0), (50, 0.5), (25, 1.0)])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_tcd_equals_diffusers_tcd_scheduler(prediction, gamma, original_steps, strength, steps):
    scheduler = TCDScheduler(original_inference_steps=original_steps,
                             prediction_type=DIFFUSERS_PREDICTION[prediction], **SD_BETAS)
    scheduler.set_timesteps(steps, strength=strength)
    noise, init = _inputs(strength)
    reference = _diffusers_run(scheduler, noise, init, strength, {"eta": gamma})

    model_sampling = make_lcm_model_sampling(None, prediction, original_steps, boundary=False)
    sigmas = schedule_sigmas(model_sampling, lcm_timesteps(steps, original_steps, strength))

    def timestep_of(sigma):
        return int(model_sampling.timestep(sigma.reshape(1)).item())

    x = _pack_start(sigmas, noise, init, strength)
    ours = tcd_loop(pack_denoiser(model_sampling), x, sigmas, _popping_noise_sampler(steps),
                    model_sampling.noise_scaling, timestep_of, model_sampling.train_sigmas, gamma, disable=True)
    _assert_close(ours, reference)


def test_tcd_rejects_gamma_outside_unit_interval():
    model_sampling = make_lcm_model_sampling(None, "eps", 50, boundary=False)
    sigmas = schedule_sigmas(model_sampling, [999])
    with pytest.raises(ValueError, match=r"gamma=1.5 is outside \[0, 1\]"):
        tcd_loop(pack_denoiser(model_sampling), torch.zeros(SHAPE), sigmas, _popping_noise_sampler(1),
                 model_sampling.noise_scaling, lambda s: 0, model_sampling.train_sigmas, 1.5, disable=True)


def test_off_grid_timesteps_are_refused_on_an_lcm_grid_model():
    model_sampling = make_lcm_model_sampling(None, "eps", 50)
    with pytest.raises(ValueError, match=r"\[749, 249\] are not on this model's sampling grid"):
        schedule_sigmas(model_sampling, [999, 749, 499, 249])
