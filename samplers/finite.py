"""Non-finite sampling results as a typed error (pure torch, no ComfyUI).

A NaN or Inf anywhere in a step spreads to the whole latent at the next UNet call, so an all-NaN image would
come out of a "successful" run. :class:`FiniteWatch` records, on the device, the first step whose latent is not
finite (two small kernels per step, no host sync) and is read once after the loop; the error then names the
step and, through the caller's ``explain`` callable, the cause (a LoRA, a constant, the input latent).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import SamplingError


class NonFiniteSamplingError(SamplingError):
    """Sampling produced NaN/Inf; the message names the step and what caused it."""


class FiniteWatch:
    """Remembers the first step (0-based) whose tensor holds NaN/Inf, without reading the device per step."""

    def __init__(self, like: torch.Tensor, explain: Callable[[], str] | None = None, what: str = "sampling"):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=like.device)
        self.explain = explain
        self.what = what

    def see(self, step: int, tensor: torch.Tensor) -> None:
        bad = ~torch.isfinite(tensor).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check(self, total: int) -> None:
        """Raise :class:`NonFiniteSamplingError` if any step was not finite (the one device read)."""
        step = int(self.first_bad)
        if step < 0:
            return
        cause = self.explain() if self.explain is not None else "no cause known"
        raise NonFiniteSamplingError(f"{self.what} produced NaN/Inf at step {step + 1} of {total}: {cause}")
