"""Rank reduction of a mixed LoRA by truncated SVD, with the error measured by reconstruction.

A concatenated module (``lora.mix.concat_modules``) has ΔW = U'D' with U' (out, R), D' (R, n), R = Σ rᵢ.
The best rank-r approximation in Frobenius norm is the truncated SVD of ΔW (Eckart–Young). ΔW is never
decomposed densely: with thin QR factorisations U' = Q₁R₁ and D'ᵀ = Q₂R₂,

    ΔW = Q₁ (R₁R₂ᵀ) Q₂ᵀ,   R₁R₂ᵀ = Ũ S Ṽᵀ (an R x R SVD)   ⇒   ΔW = (Q₁Ũ) S (Q₂Ṽ)ᵀ

which is an exact SVD of ΔW at O((out + n)·R²) cost. Keeping the r largest singular values gives
``up = Q₁Ũ_r·√S_r`` and ``down = √S_r·Ṽ_rᵀQ₂ᵀ`` (alpha = r, scale 1). For a kxk conv the down is reshaped back
to a kxk kernel and the up is a 1x1 conv (the flattened-kernel convention of kohya/ComfyUI).

Layers of equal factor shapes are processed as stacks (batched QR, one batched core SVD, one transfer back;
see :mod:`lora.batched`), so the cost is a few dozen batched calls rather than a Python loop over layers.

The reported error is *measured* on the factors produced: ``‖ΔW − ΔW_r‖_F / ‖ΔW‖_F`` per layer from
[U' | U_r] and [D'; −D_r] in float64 (:func:`lora.batched.difference_norms_sq`, as accurate as a dense float64
reconstruction); the total is √(Σ‖ΔW − ΔW_r‖²) / √(Σ‖ΔW‖²).
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from .batched import CHUNK_BYTES, chunked, difference_norms_sq, matrix_2d, shape_groups, thin_qr
from .errors import RankError
from .types import LoraModule

LOG = logging.getLogger(__name__)
SVDS_PER_THREAD = 8
"""Fewest core SVDs per pool thread (below that, thread start-up costs more than it saves)."""


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


def _svd_parts(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(Q₁, Ũ, S, Ṽᵀ, Q₂) with up = Q₁R₁, downᵀ = Q₂R₂, R₁R₂ᵀ = ŨSṼᵀ; stacks (leading batch dim) allowed."""
    q1, r1 = thin_qr(up)
    q2, r2 = thin_qr(down.mT)
    u_small, s, vh_small = core_svd(r1 @ r2.mT)
    return q1, u_small, s, vh_small, q2


def lowrank_svd(up: torch.Tensor, down: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact thin SVD of ΔW = up @ down via QR of both factors: returns (left, S, right_t), descending S.

    Works on one (out, R) x (R, in) pair or on stacks (B, out, R) x (B, R, in).
    """
    q1, u_small, s, vh_small, q2 = _svd_parts(up, down)
    return q1 @ u_small, s, vh_small @ q2.mT


def core_svd(core: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SVD of the small (Σr x Σr) cores, always by LAPACK on the CPU (one transfer each way per stack).

    At Σr ≤ ~200 LAPACK on the CPU beats cuSOLVER's per-matrix launches (torch batches cuSOLVER's Jacobi SVD
    only up to 32 x 32); for a GPU ``core`` this is one device→host→device round trip per stack. torch runs a
    batched CPU SVD matrix after matrix, and threads inside one 112 x 112 SVD do not help, so a stack is split
    over a thread pool (torch releases the GIL): measured on 2 cores, 200 cores of 112 x 112 took 0.20 s as one
    batched call and 0.12 s over 2 threads.
    """
    host = core.cpu()
    workers = min(torch.get_num_threads(), host.shape[0] // SVDS_PER_THREAD) if host.ndim == 3 else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(_thin_svd, host.chunk(workers)))
        u, s, vh = (torch.cat(pieces) for pieces in zip(*parts, strict=True))
    else:
        u, s, vh = _thin_svd(host)
    return u.to(core.device), s.to(core.device), vh.to(core.device)


def _thin_svd(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(matrices, full_matrices=False)


def _truncate_stack(up: torch.Tensor, down: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors (√S split) of a stack of (B, out, R) x (B, R, in) factors; rank ≤ min(out, in, R).

    Only the kept singular vectors are multiplied out: up_r = Q₁Ũ[:, :r]·√S_r, down_r = √S_r·Ṽ[:, :r]ᵀQ₂ᵀ.
    """
    q1, u_small, s, vh_small, q2 = _svd_parts(up, down)
    root = s[..., :rank].sqrt()
    new_up = (q1 @ u_small[..., :rank]) * root[..., None, :]
    new_down = root[..., :, None] * (vh_small[..., :rank, :] @ q2.mT)
    return new_up, new_down


def _reduce_chunk(modules: Sequence[LoraModule], rank: int, device: torch.device,
                  measure: bool) -> tuple[list[LoraModule], list[float], list[float]]:
    """Truncated SVD of same-shaped modules as one stack; ([modules], [‖ΔW − ΔW_r‖²], [‖ΔW‖²]).

    The returned factors of a stack are views of one CPU tensor per side (one transfer back per stack).
    """
    first = modules[0]
    scales = torch.tensor([m.scale for m in modules], dtype=torch.float32, device=device)
    up = torch.stack([matrix_2d(m.up) for m in modules]).to(device=device, dtype=torch.float32)
    up = up * scales[:, None, None]
    down = torch.stack([matrix_2d(m.down) for m in modules]).to(device=device, dtype=torch.float32)
    keep = min(rank, *up.shape[1:], down.shape[-1])
    new_up, new_down = _truncate_stack(up, down, keep)
    errors = norms = [0.0] * len(modules)
    if measure:
        left = torch.cat([up, new_up], dim=-1).double()
        right = torch.cat([down, -new_down], dim=-2).double()
        errors, norms = (t.tolist() for t in difference_norms_sq(left, right, up.shape[-1]))
    if first.down.ndim == 4:
        new_down = new_down.reshape(len(modules), keep, *first.down.shape[1:])
        new_up = new_up.reshape(len(modules), new_up.shape[1], keep, 1, 1)
    ups, downs = new_up.cpu().unbind(0), new_down.cpu().unbind(0)
    return [LoraModule(down=d, up=u, alpha=float(keep)) for u, d in zip(ups, downs, strict=True)], errors, norms


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


def _signature(module: LoraModule) -> tuple:
    return tuple(module.up.shape), tuple(module.down.shape)


def reduce_modules(modules: Mapping[str, LoraModule], rank: int, device: torch.device | str | None = None,
                   measure: bool = True, chunk_bytes: int = CHUNK_BYTES
                   ) -> tuple[dict[str, LoraModule], ReductionReport]:
    """Truncated SVD of every module to ``rank`` (on the GPU when available), with measured errors
    (``measure=False``: no errors, for callers that measure what they finally write).

    Modules of equal factor shapes are reduced as stacks of at most ``chunk_bytes`` of float32 factors
    (:mod:`lora.batched`): a batched QR per side, one batched core SVD, one transfer back per stack; the
    factors of one stack share a CPU buffer (views). Layers whose rank is below ``rank`` keep their rank.
    """
    check_rank(rank, modules)
    device = torch.device(device) if device is not None else default_device()
    report = ReductionReport()
    reduced: dict[str, LoraModule] = {}
    with full_precision_matmul():
        for group in shape_groups(list(modules), lambda key: _signature(modules[key])):
            up_shape, down_shape = _signature(modules[group[0]])
            item_bytes = 4 * (up_shape[0] + math.prod(down_shape[1:])) * down_shape[0]
            for keys in chunked(group, item_bytes, chunk_bytes):
                results, errors, norms = _reduce_chunk([modules[k] for k in keys], rank, device, measure)
                for key, module, error_sq, norm_sq in zip(keys, results, errors, norms, strict=True):
                    reduced[key] = module
                    report.error_sq += error_sq
                    report.norm_sq += norm_sq
                    report.layer_errors[key] = math.sqrt(error_sq / norm_sq) if norm_sq > 0 else 0.0
    reduced = {key: reduced[key] for key in modules}
    report.layer_errors = {key: report.layer_errors[key] for key in modules}
    LOG.info("SVD to rank %d on %s: total relative error %.3e over %d layers", rank, device,
             report.total_error, len(reduced))
    return reduced, report
