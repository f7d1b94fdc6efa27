"""The reference LCD step, re-implemented from diffusers' LCM-LoRA distillation scripts (independent of
the pack's trainer; shared by its tests and its benchmark).

Written from ``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py`` (and the SDXL variant,
which adds ``added_cond_kwargs`` and zero unconditional embeddings): the script's ``DDIMSolver`` (numpy),
``get_predicted_original_sample`` / ``get_predicted_noise``, ``scalings_for_boundary_conditions``, the
guidance on x̂₀ and ε̂, the target under ``no_grad`` with the same LoRA student, l2 or pseudo-Huber loss.
``test_distill_parity.py`` compares the pack's step with it; ``bench/bench_distill.py`` times it.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


class ReferenceSolver:
    """The script's DDIMSolver (numpy, as written there)."""

    def __init__(self, alpha_cumprods, timesteps=1000, ddim_timesteps=50, device="cpu"):
        step_ratio = timesteps // ddim_timesteps
        self.ddim_timesteps = (np.arange(1, ddim_timesteps + 1) * step_ratio).round().astype(np.int64) - 1
        self.prev = torch.from_numpy(np.asarray([alpha_cumprods[0]] + alpha_cumprods[self.ddim_timesteps[:-1]].tolist()))
        self.ddim_timesteps = torch.from_numpy(self.ddim_timesteps).long().to(device)
        self.prev = self.prev.to(device)

    def ddim_step(self, pred_x0, pred_noise, index):
        prev = self.prev.gather(-1, index).reshape(-1, 1, 1, 1)
        return prev.sqrt() * pred_x0 + (1.0 - prev).sqrt() * pred_noise


def _extract(a, t):
    return a.gather(-1, t).reshape(-1, 1, 1, 1)


def _x0(out, t, sample, prediction, alphas, sigmas):
    a, s = _extract(alphas, t), _extract(sigmas, t)
    return (sample - s * out) / a if prediction == "epsilon" else a * sample - s * out


def _eps(out, t, sample, prediction, alphas, sigmas):
    a, s = _extract(alphas, t), _extract(sigmas, t)
    return out if prediction == "epsilon" else a * out + s * sample


def _scalings(t, sigma_data=0.5, timestep_scaling=10.0):
    scaled = timestep_scaling * t
    return (sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)).reshape(-1, 1, 1, 1), \
        (scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5).reshape(-1, 1, 1, 1)


def reference_scheduler(prediction: str, model_alphas_cumprod: torch.Tensor):
    """SD's DDPMScheduler holding the teacher model's ᾱ. diffusers builds ᾱ as a float32 cumprod (up to 6e-5
    relative off near t = 999), ComfyUI in float64: the same schedule (checked), the model's values used."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", prediction_type=prediction)
    model_acp = model_alphas_cumprod.to(torch.float32)
    assert torch.allclose(scheduler.alphas_cumprod, model_acp, rtol=1e-4, atol=0), "not SD's scaled-linear schedule"
    scheduler.alphas_cumprod = model_acp
    return scheduler


def reference_loss(student, teacher, latents, embeds, uncond_embeds, added, uncond_added, draw, scheduler, loss_type,
                   huber_c, autocast=contextlib.nullcontext, weight_dtype=torch.float32):
    """The script's steps 4-10. ``autocast``: the context the script's accelerate setup runs the UNets in
    (none for fp32); the teacher gets its inputs in ``weight_dtype``, as there."""
    device = latents.device
    prediction = scheduler.config.prediction_type
    acp = scheduler.alphas_cumprod.to(device)
    alphas, sigmas = acp.sqrt(), (1 - acp).sqrt()
    solver = ReferenceSolver(scheduler.alphas_cumprod.cpu().numpy(), device=device)
    index, noise, w = draw.index, draw.noise, draw.w.reshape(-1, 1, 1, 1).to(latents.dtype)
    start = solver.ddim_timesteps[index]
    timesteps = torch.where(start - 20 < 0, torch.zeros_like(start), start - 20)
    c_skip_start, c_out_start = _scalings(start)
    c_skip, c_out = _scalings(timesteps)
    noisy = scheduler.add_noise(latents, noise, start)
    with autocast():
        noise_pred = student(noisy, start, encoder_hidden_states=embeds.float(), added_cond_kwargs=added).sample.float()
    model_pred = c_skip_start * noisy + c_out_start * _x0(noise_pred, start, noisy, prediction, alphas, sigmas)

    def cast(kwargs):
        return None if kwargs is None else {k: v.to(weight_dtype) for k, v in kwargs.items()}
    with torch.no_grad(), autocast():
        cond = teacher(noisy.to(weight_dtype), start, encoder_hidden_states=embeds.to(weight_dtype),
                       added_cond_kwargs=cast(added)).sample
        uncond = teacher(noisy.to(weight_dtype), start, encoder_hidden_states=uncond_embeds.to(weight_dtype),
                         added_cond_kwargs=cast(uncond_added)).sample
        cx0, ux0 = (_x0(o, start, noisy, prediction, alphas, sigmas) for o in (cond, uncond))
        ceps, ueps = (_eps(o, start, noisy, prediction, alphas, sigmas) for o in (cond, uncond))
        x_prev = solver.ddim_step(cx0 + w * (cx0 - ux0), ceps + w * (ceps - ueps), index)
    with torch.no_grad():
        with autocast():
            target_pred = student(x_prev.float(), timesteps, encoder_hidden_states=embeds.float(),
                                  added_cond_kwargs=added).sample
        target = c_skip * x_prev + c_out * _x0(target_pred, timesteps, x_prev, prediction, alphas, sigmas)
    if loss_type == "l2":
        return torch.nn.functional.mse_loss(model_pred.float(), target.float(), reduction="mean")
    return torch.mean(torch.sqrt((model_pred.float() - target.float()) ** 2 + huber_c ** 2) - huber_c)
