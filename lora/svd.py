"""Rank reduction of a mixed LoRA by truncated SVD, with the error measured by reconstruction.

A concatenated module (``lora.mix.concat_modules``) has ΔW = U'D' with U' (out, R), D' (R, n), R = Σ rᵢ.
The best rank-r approximation in Frobenius norm is the truncated SVD of ΔW (Eckart–Young). ΔW is never
decomposed densely: with thin QR factorisations U' = Q₁R₁ and D'ᵀ = Q₂R₂,

    ΔW = Q₁ (R₁R₂ᵀ) Q₂ᵀ,   R₁R₂ᵀ = Ũ S Ṽᵀ (an R x R SVD)   ⇒   ΔW = (Q₁Ũ) S (Q₂Ṽ)ᵀ

which is an exact SVD of ΔW at O((out + n)·R²) cost. Keeping the r largest singular values gives
``up = Q₁Ũ_r·√S_r`` and ``down = √S_r·Ṽ_rᵀQ₂ᵀ`` (alpha = r, scale 1). For a kxk conv the down is reshaped back
to a kxk kernel and the up is a 1x1 conv (the flattened-kernel convention of kohya/ComfyUI).

The reported error is *measured*: ΔW and ΔW_r are both reconstructed densely and
``‖ΔW − ΔW_r‖_F / ‖ΔW‖_F`` is computed per layer; the total is √(Σ‖ΔW − ΔW_r‖²) / √(Σ‖ΔW‖²).
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch

from .types import LoraModule

LOG = logging.getLogger(__name__)


class RankError(ValueError):
    """A target rank that cannot be used; the message names the valid range."""


@dataclass
class ReductionReport:
    """Measured errors of a rank reduction: per layer relative Frobenius error and the total."""

    layer_errors: dict[str, float] = field(default_factory=dict)
    error_sq: float = 0.0
    norm_sq: float = 0.0

    @property
    def total_error(self) -> float:
        return math.sqrt(self.error_sq / self.norm_sq) if self.norm_sq > 0 else 0.0

    @property
    def worst_layer(self) -> tuple[str, float]:
        if not self.layer_errors:
            return ("", 0.0)
        key = max(self.layer_errors, key=self.layer_errors.get)
        return key, self.layer_errors[key]


def default_device() -> torch.device:
    """The GPU when there is one (the SVDs and reconstructions run there), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def full_precision_matmul() -> Iterator[None]:
    """fp32 matmuls without TF32 (10-bit mantissa) while errors are measured; the setting is restored."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_float32_matmul_precision(previous)


def factor_matrices(module: LoraModule, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(U', D') of a module as float32 2-D matrices on ``device`` with the scale folded into U'."""
    up = module.up.reshape(module.up.shape[0], -1).to(device=device, dtype=torch.float32)
    down = module.down.reshape(module.rank, -1).to(device=device, dtype=torch.float32)
    return up * module.scale, down


def lowrank_svd(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact thin SVD of ΔW = up @ down via QR of both factors: returns (left, S, right_t), descending S."""
    q1, r1 = torch.linalg.qr(up, mode="reduced")
    q2, r2 = torch.linalg.qr(down.T, mode="reduced")
    # The core is only (Σr × Σr): LAPACK on the CPU beats a cuSOLVER launch per layer at that size.
    small = (r1 @ r2.T).cpu()
    u_small, s, vh_small = (t.to(up.device) for t in torch.linalg.svd(small, full_matrices=False))
    return q1 @ u_small, s, vh_small @ q2.T


def truncate(module: LoraModule, rank: int, device: torch.device,
             measure: bool = True) -> tuple[LoraModule, float, float]:
    """Rank-``rank`` module closest to ``module`` in Frobenius norm, with (‖ΔW − ΔW_r‖², ‖ΔW‖²) measured.

    Layers whose own rank is below ``rank`` keep their rank (the SVD is still taken; the error is ~0).
    ``measure=False`` skips the dense reconstruction (errors returned as 0) for callers that measure the
    factors they finally write (the export measures after casting to the save dtype).
    """
    up, down = factor_matrices(module, device)
    left, s, right_t = lowrank_svd(up, down)
    keep = min(rank, int(s.shape[0]))
    root = s[:keep].sqrt()
    new_up = left[:, :keep] * root
    new_down = root[:, None] * right_t[:keep]
    error_sq = norm_sq = 0.0
    if measure:
        dense = up @ down
        error_sq = float(torch.linalg.matrix_norm(dense - new_up @ new_down) ** 2)
        norm_sq = float(torch.linalg.matrix_norm(dense) ** 2)
    if module.down.ndim == 4:
        new_down = new_down.reshape(keep, *module.down.shape[1:])
        new_up = new_up.reshape(new_up.shape[0], keep, 1, 1)
    reduced = LoraModule(down=new_down.contiguous().cpu(), up=new_up.contiguous().cpu(), alpha=float(keep))
    return reduced, error_sq, norm_sq


def check_rank(rank: int, modules: Mapping[str, LoraModule]) -> int:
    """Valid target ranks are 1 .. the largest concatenated rank of the mix; returns that maximum."""
    max_rank = max((m.rank for m in modules.values()), default=0)
    if not isinstance(rank, int) or rank < 1:
        raise RankError(f"target rank {rank!r} must be an integer >= 1 (64 is typical for SDXL).")
    if rank > max_rank:
        raise RankError(f"target rank {rank} is above the concatenated rank {max_rank} of this mix; the "
                        f"concat export is already exact at rank {max_rank}: use mode 'concat' or a rank "
                        f"<= {max_rank}.")
    return max_rank


def reduce_modules(modules: Mapping[str, LoraModule], rank: int, device: torch.device | str | None = None,
                   measure: bool = True) -> tuple[dict[str, LoraModule], ReductionReport]:
    """Truncated SVD of every module to ``rank`` (on the GPU when available), with measured errors
    (``measure=False``: no errors, for callers that measure what they finally write)."""
    check_rank(rank, modules)
    device = torch.device(device) if device is not None else default_device()
    report = ReductionReport()
    reduced: dict[str, LoraModule] = {}
    with full_precision_matmul():
        for key, module in modules.items():
            reduced[key], error_sq, norm_sq = truncate(module, rank, device, measure)
            report.error_sq += error_sq
            report.norm_sq += norm_sq
            report.layer_errors[key] = math.sqrt(error_sq / norm_sq) if norm_sq > 0 else 0.0
    LOG.info("SVD to rank %d on %s: total relative error %.3e over %d layers", rank, device,
             report.total_error, len(reduced))
    return reduced, report
