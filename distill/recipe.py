"""Latent consistency distillation (LCD) as the LCM-LoRA recipe computes it (pure torch, no ComfyUI).

LCM (Luo et al. 2023, arXiv 2310.04378, Algorithm 1) with a LoRA in place of a full student (LCM-LoRA,
arXiv 2311.05556), in the form of diffusers' ``examples/consistency_distillation/train_lcm_distill_lora_*``:

* DDIM solver on N = ``num_ddim_timesteps`` points of the T = 1000 training timesteps, skip k = T // N:
  ``τ_i = (i+1)·k − 1`` (i = 0 … N−1). A step draws i ~ U{0 … N−1}, ``t_{n+k} = τ_i``, ``t_n = max(t_{n+k} − k, 0)``.
* ``z_{t_{n+k}} = √ᾱ·x₀ + √(1−ᾱ)·ε`` (DDPM ``add_noise``), ``w ~ U[w_min, w_max]``.
* Student f_θ(z, t) = c_skip(t)·z + c_out(t)·x̂₀(F_θ(z, t, c)) with the boundary scalings of
  :mod:`samplers.boundary` (σ_data 0.5, timestep scaling 10); ``x̂₀ = (z − σ·ε̂)/α`` (eps) or ``α·z − σ·v̂`` (v).
* Teacher (the frozen base, LoRA off) with the LCM guidance form on both x̂₀ and ε̂:
  ``x̂₀ = x̂₀(c) + w·(x̂₀(c) − x̂₀(∅))`` (LCM eq. 9; no w embedding for a LoRA), then one DDIM step
  ``x_{t_n} = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev)·ε̂`` with ᾱ_prev = ᾱ(τ_{i−1}) (ᾱ(0) for i = 0).
* Target (no grad, LoRA on, no separate EMA network for LCM-LoRA): f_θ(x_{t_n}, t_n).
* Loss: ``l2`` = mean((f − target)²) or pseudo-Huber ``mean(√((f − target)² + c²) − c)`` (c = ``huber_c``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..samplers.boundary import DEFAULT_SIGMA_DATA, DEFAULT_TIMESTEP_SCALING, boundary_condition_scalings

PREDICTIONS = ("epsilon", "v_prediction")
LOSS_TYPES = ("l2", "huber")


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """``x`` of shape (B,) viewed as (B, 1, …, 1) with ``ndim`` dimensions."""
    return x[(...,) + (None,) * (ndim - x.ndim)]


class DDIMSolver:
    """The DDIM grid and step of the LCD recipe (deterministic DDIM, η = 0)."""

    def __init__(self, alphas_cumprod: torch.Tensor, num_train_timesteps: int = 1000, ddim_timesteps: int = 50):
        acp = alphas_cumprod.detach().to("cpu", torch.float64)
        self.skip = num_train_timesteps // ddim_timesteps
        self.ddim_timesteps = (torch.arange(1, ddim_timesteps + 1, dtype=torch.float64) * self.skip).round().long() - 1
        self.ddim_alpha_cumprods_prev = torch.cat([acp[:1], acp[self.ddim_timesteps[:-1]]])

    def to(self, device) -> DDIMSolver:
        self.ddim_timesteps = self.ddim_timesteps.to(device)
        self.ddim_alpha_cumprods_prev = self.ddim_alpha_cumprods_prev.to(device)
        return self

    def ddim_step(self, pred_x0: torch.Tensor, pred_noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x_prev = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε̂ at grid position ``index`` (B,)."""
        prev = append_dims(self.ddim_alpha_cumprods_prev[index], pred_x0.ndim)
        return prev.sqrt() * pred_x0 + (1.0 - prev).sqrt() * pred_noise


@dataclass
class Schedule:
    """α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) of the teacher's discrete schedule, plus its prediction type."""

    alphas_cumprod: torch.Tensor
    prediction: str

    def __post_init__(self) -> None:
        self.alphas_cumprod = self.alphas_cumprod.to(torch.float32)
        self.alpha = self.alphas_cumprod.sqrt()
        self.sigma = (1.0 - self.alphas_cumprod).sqrt()

    def to(self, device) -> Schedule:
        self.alphas_cumprod, self.alpha, self.sigma = (x.to(device) for x in (self.alphas_cumprod, self.alpha,
                                                                             self.sigma))
        return self

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        acp = self.alphas_cumprod.to(x0.dtype)[t]
        return append_dims(acp ** 0.5, x0.ndim) * x0 + append_dims((1 - acp) ** 0.5, x0.ndim) * noise

    def _coefficients(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        return append_dims(self.alpha[t], ndim), append_dims(self.sigma[t], ndim)

    def predicted_x0(self, output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self._coefficients(t, sample.ndim)
        if self.prediction == "epsilon":
            return (sample - sigma * output) / alpha
        return alpha * sample - sigma * output

    def predicted_noise(self, output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self._coefficients(t, sample.ndim)
        if self.prediction == "epsilon":
            return output
        return alpha * output + sigma * sample


@dataclass
class StepDraw:
    """The random quantities of one step for the *global* batch (drawn on the CPU, sliced per rank)."""

    index: torch.Tensor   # (B,) long, position on the DDIM grid
    noise: torch.Tensor   # (B, C, H, W)
    w: torch.Tensor       # (B,) guidance scale

    def shard(self, start: int, stop: int) -> StepDraw:
        return StepDraw(self.index[start:stop], self.noise[start:stop], self.w[start:stop])

    def to(self, device) -> StepDraw:
        return StepDraw(self.index.to(device), self.noise.to(device), self.w.to(device))


def draw_step(generator: torch.Generator, batch: int, latent_shape: tuple[int, ...], num_ddim_timesteps: int,
              w_min: float, w_max: float) -> StepDraw:
    """Draw grid index, noise and w for ``batch`` samples from ``generator`` (the order is fixed)."""
    index = torch.randint(0, num_ddim_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, *latent_shape), generator=generator)
    w = (w_max - w_min) * torch.rand((batch,), generator=generator) + w_min
    return StepDraw(index=index, noise=noise, w=w)


def lcd_loss(model_pred: torch.Tensor, target: torch.Tensor, loss_type: str, huber_c: float) -> torch.Tensor:
    """``l2``: mean squared error; ``huber``: pseudo-Huber mean(√(d² + c²) − c) (LCM-LoRA's choice)."""
    diff = model_pred.float() - target.float()
    if loss_type == "l2":
        return torch.mean(diff ** 2)
    return torch.mean(torch.sqrt(diff ** 2 + huber_c ** 2) - huber_c)


@dataclass
class RecipeConfig:
    """The hyper-parameters the step itself uses (the rest of the recipe lives in the trainer's config)."""

    num_ddim_timesteps: int = 50
    loss_type: str = "huber"
    huber_c: float = 0.001
    timestep_scaling: float = DEFAULT_TIMESTEP_SCALING
    sigma_data: float = DEFAULT_SIGMA_DATA


# (x_t, t) -> raw model output (eps or v). The student/target carry the LoRA; the teacher returns (cond, uncond).
StudentFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TeacherFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def lcd_step(latents: torch.Tensor, draw: StepDraw, schedule: Schedule, solver: DDIMSolver, recipe: RecipeConfig,
             student: StudentFn, teacher: TeacherFn, target_model: StudentFn) -> torch.Tensor:
    """The LCD loss of one batch (differentiable in the student's LoRA); see the module docstring."""
    start = solver.ddim_timesteps[draw.index]
    end = torch.clamp(start - solver.skip, min=0)
    scalings = dict(timestep_scaling=recipe.timestep_scaling, sigma_data=recipe.sigma_data)
    c_skip_start, c_out_start = (append_dims(x, latents.ndim) for x in boundary_condition_scalings(start, **scalings))
    c_skip, c_out = (append_dims(x, latents.ndim) for x in boundary_condition_scalings(end, **scalings))
    noisy = schedule.add_noise(latents, draw.noise, start)
    w = append_dims(draw.w, latents.ndim).to(latents.dtype)

    pred_x0 = schedule.predicted_x0(student(noisy, start), start, noisy)
    model_pred = c_skip_start * noisy + c_out_start * pred_x0

    with torch.no_grad():
        cond, uncond = teacher(noisy, start)
        cond_x0, uncond_x0 = (schedule.predicted_x0(o, start, noisy) for o in (cond, uncond))
        cond_eps, uncond_eps = (schedule.predicted_noise(o, start, noisy) for o in (cond, uncond))
        guided_x0 = cond_x0 + w * (cond_x0 - uncond_x0)
        guided_eps = cond_eps + w * (cond_eps - uncond_eps)
        x_prev = solver.ddim_step(guided_x0, guided_eps, draw.index).to(latents.dtype)
        target_x0 = schedule.predicted_x0(target_model(x_prev, end), end, x_prev)
        target = c_skip * x_prev + c_out * target_x0
    return lcd_loss(model_pred, target, recipe.loss_type, recipe.huber_c)


@torch.no_grad()
def ddim_sample(model: TeacherFn, noise: torch.Tensor, schedule: Schedule, steps: int, guidance: float,
                num_train_timesteps: int = 1000) -> torch.Tensor:
    """Teacher x₀ for the prompts-only mode: deterministic DDIM on ``steps`` "trailing" timesteps (the solver grid) with classifier-
    free guidance ε̂ = ε̂(∅) + s·(ε̂(c) − ε̂(∅)) (x̂₀ likewise); returns the last x̂₀."""
    solver = DDIMSolver(schedule.alphas_cumprod, num_train_timesteps, steps).to(noise.device)
    x = noise
    pred_x0 = noise
    for i in reversed(range(steps)):
        index = torch.full((noise.shape[0],), i, dtype=torch.long, device=noise.device)
        t = solver.ddim_timesteps[index]
        cond, uncond = model(x, t)
        x0 = [schedule.predicted_x0(o, t, x) for o in (cond, uncond)]
        eps = [schedule.predicted_noise(o, t, x) for o in (cond, uncond)]
        pred_x0 = x0[1] + guidance * (x0[0] - x0[1])
        pred_eps = eps[1] + guidance * (eps[0] - eps[1])
        x = solver.ddim_step(pred_x0, pred_eps, index).to(noise.dtype)
    return pred_x0
