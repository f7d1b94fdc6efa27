"""The fixed nonlinear stand-in for a UNet that the pure-math parity tests run on both sides (the pack's loops and
diffusers' schedulers): ``test_lcm_sampler_parity`` and ``test_accel_parity``."""
from __future__ import annotations

import torch

SHAPE = (2, 4, 8, 8)


def fake_unet(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, nonlinear stand-in for a UNet's eps / v / x0 output (depends on x_t and t)."""
    weight = torch.linspace(-1.0, 1.0, SHAPE[1]).view(1, -1, 1, 1)
    return torch.tanh(0.8 * x_t + weight * (t.float().view(-1, 1, 1, 1) / 1000.0)) + 0.1 * torch.sin(3 * x_t)


def pack_denoiser(model_sampling):
    """x̂₀ = f(x, σ) as the pack's loops call it: ComfyUI model sampling around :func:`fake_unet`."""
    def denoise(x, sigma):
        sigma = sigma.reshape(-1)[:1].expand(x.shape[0])
        x_t = model_sampling.calculate_input(sigma, x)
        return model_sampling.calculate_denoised(sigma, fake_unet(x_t, model_sampling.timestep(sigma).float()), x)

    return denoise
