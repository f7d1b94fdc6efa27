"""The reference LCD step of devkit/distill_reference.py: its DDIM solver is diffusers' DDIMScheduler."""
from __future__ import annotations

import torch
from lcm_lora_pack.devkit.distill_reference import ReferenceSolver


def test_reference_solver_is_ddim():
    """The reference DDIM step equals diffusers' DDIMScheduler (η = 0, "trailing" grid τ_i = 20(i+1) − 1) from the same x̂₀/ε̂."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", set_alpha_to_one=False, steps_offset=0,
                              clip_sample=False, timestep_spacing="trailing")
    scheduler.set_timesteps(50)
    solver = ReferenceSolver(scheduler.alphas_cumprod.numpy())
    assert sorted(scheduler.timesteps.tolist()) == solver.ddim_timesteps.tolist()
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((2, 4, 8, 8), generator=generator), torch.randn((2, 4, 8, 8), generator=generator)
    for i in (1, 17, 49):
        t = int(solver.ddim_timesteps[i])
        acp = scheduler.alphas_cumprod[t]
        sample = acp.sqrt() * x0 + (1 - acp).sqrt() * eps
        expected = scheduler.step(eps, t, sample, eta=0.0).prev_sample
        ours = solver.ddim_step(x0, eps, torch.tensor([i, i]))
        assert torch.allclose(ours.float(), expected, rtol=1e-5, atol=1e-5), i
