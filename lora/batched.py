"""Batched low-rank linear algebra for the export: shape groups, memory-bounded chunks, factored norms.

The export touches every layer of a model (788 in SDXL). Per layer the work is small (QRs of an out x R and an
in x R factor, an R x R SVD), so a per-layer loop is dominated by Python, kernel launches and host syncs. The
layers fall into a few dozen distinct factor shapes; :func:`shape_groups` collects them and
:func:`chunked` splits each group into stacks whose factors stay below :data:`CHUNK_BYTES`, so the batched
QR / SVD / matmul of one stack runs as one call with one transfer back.

:func:`difference_norms_sq` measures ‖ΔW − ΔW'‖_F and ‖ΔW‖_F of two factored matrices without building the
out x in products (see its docstring for the error bound).
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

import torch

CHUNK_BYTES = 1 << 29
"""Upper bound on the bytes of the stacked input factors of one batched call (one chunk of a shape group). The
QR factors and products of a call are of the same size, so its peak memory is about 3x this (1.5 GiB)."""

ORTHONORMAL_TOLERANCE = 1e-10
"""CholeskyQR2 result accepted only if ‖QᵀQ − I‖_max is below this (float64; Householder QR reaches ~1e-15)."""
CONDITION_LIMIT = 1e8  # κ up to which CholeskyQR2 in float64 keeps Q orthonormal to ~u (Fukaya et al. 2014)

Key = TypeVar("Key")


def shape_groups(keys: Sequence[Key], signature: Callable[[Key], Hashable]) -> list[list[Key]]:
    """``keys`` grouped by ``signature(key)`` (e.g. the factor shapes), groups and members in first-seen order."""
    groups: dict[Hashable, list[Key]] = {}
    for key in keys:
        groups.setdefault(signature(key), []).append(key)
    return list(groups.values())


def chunked(keys: Sequence[Key], bytes_per_item: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[list[Key]]:
    """Consecutive slices of ``keys`` with at most ``chunk_bytes`` of stacked factors each (at least one key)."""
    size = max(1, chunk_bytes // max(1, bytes_per_item))
    for start in range(0, len(keys), size):
        yield list(keys[start:start + size])


def thin_qr(matrices: torch.Tensor, cholesky: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR ``A = Q R`` of a matrix or a stack (…, n, k), in ``A``'s dtype.

    On the CPU (and where it cannot be used) this is LAPACK's Householder QR (``torch.linalg.qr``). On a GPU
    torch runs a stacked Householder QR as one cuSOLVER call per matrix (~1 ms each on an H100), which made the
    QRs most of an SDXL export. There it is CholeskyQR2 in float64 (Fukaya, Nakatsukasa, Yanagisawa, Yamamoto,
    "CholeskyQR2: a simple and communication-avoiding algorithm", 2014): G = AᵀA, R₁ = chol(G), Q₁ = A R₁⁻¹,
    repeated once on Q₁ (R = R₂R₁) — batched matmuls, a batched Cholesky and a triangular solve, 20–40× faster on
    an H100. One pass loses orthogonality like u·κ(A)²; the second pass restores it to ~u for κ(A) ≲ u^(-1/2)
    ≈ 1e8 in float64 (measured ‖QᵀQ − I‖ ≤ 4e-15 on random factors). If a Gram matrix is not positive definite
    (rank-deficient factors: κ = ∞, or n < k) the stack falls back to Householder. ``cholesky`` forces the
    choice (None: CholeskyQR2 on CUDA only).
    """
    use_cholesky = matrices.device.type == "cuda" if cholesky is None else cholesky
    if not use_cholesky or matrices.shape[-2] < matrices.shape[-1]:
        return torch.linalg.qr(matrices, mode="reduced")
    wide = matrices.to(torch.float64)
    q1, r1, ok1 = _cholesky_qr(wide)
    q, r2, ok2 = _cholesky_qr(q1)
    r = r2 @ r1
    if not (ok1 and ok2 and _orthonormal(q) and _well_conditioned(r)):
        return torch.linalg.qr(matrices, mode="reduced")
    return q.to(matrices.dtype), r.to(matrices.dtype)


def _well_conditioned(r: torch.Tensor, limit: float = CONDITION_LIMIT) -> bool:
    """min|Rᵢᵢ| / max|Rᵢᵢ| ≥ 1/limit for every matrix: κ(A) ≥ max|Rᵢᵢ|/min|Rᵢᵢ|, so a smaller ratio means κ(A) is
    past what CholeskyQR2 is proven for (≈ u^(-1/2)); such stacks (rank-deficient factors whose rounded Gram matrix
    Cholesky still factored) take Householder, as the docstring of :func:`thin_qr` promises."""
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1).abs()
    return bool((diagonal.amin(-1) * limit >= diagonal.amax(-1)).all().item())


def _orthonormal(q: torch.Tensor, tolerance: float = ORTHONORMAL_TOLERANCE) -> bool:
    """‖QᵀQ − I‖_max below ``tolerance`` for every matrix of the stack (catches a near-singular Gram matrix
    that Cholesky still factored)."""
    gram = q.mT @ q
    identity = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return bool(((gram - identity).abs().amax() < tolerance).item())


def _cholesky_qr(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    upper, info = torch.linalg.cholesky_ex(matrices.mT @ matrices, upper=True)
    q = torch.linalg.solve_triangular(upper, matrices, upper=True, left=False)
    return q, upper, bool((info == 0).all()) and bool(torch.isfinite(q).all())


def matrix_2d(tensor: torch.Tensor) -> torch.Tensor:
    """A LoRA factor as a matrix: up (out, r[,1,1]) → (out, r); down (r, in[, kh, kw]) → (r, in·kh·kw)."""
    return tensor.reshape(tensor.shape[0], -1)


def difference_norms_sq(left: torch.Tensor, right: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖L R‖²_F, ‖L[:, :split] R[:split]‖²_F) per batch item of stacked float64 factors L (B, p, m), R (B, m, q).

    With L = [U | U'] and R = [D; −D'] the first value is ‖UD − U'D'‖² and the second ‖UD‖², i.e. the squared
    error of a factored approximation U'D' of a factored ΔW = UD and the squared norm of ΔW.

    Method: orthogonal invariance. With the thin QR R^T = Q T (T upper triangular, Q orthonormal columns),
    L R = (L T^T) Q^T, so ‖L R‖ = ‖L T^T‖ (p x m x m work instead of p x m x q), and because T is triangular,
    L[:, :split] R[:split] = L[:, :split] T[:split, :split]^T Q^T. The QR is taken on the side with fewer rows
    (the product is transposed when q > p), and skipped when q ≤ m (then L R is formed directly).

    Why not the Gram identity ‖LR‖² = Σ (LᵀL)∘(RRᵀ): it forms the *square* of the result from terms of size
    (Σₖ‖lₖ‖‖rₖ‖)², so when the error is small against the factors (an exact fp32 concat: ‖ΔW − ΔW'‖ ≈ 1e-7‖ΔW‖)
    the rounding of the sum, u·(Σₖ‖lₖ‖‖rₖ‖)², swamps ‖ΔW − ΔW'‖² ≈ 1e-14‖ΔW‖²: even in float64 (u = 1.1e-16) the
    error would only be resolved down to ≈ √(u·m)·‖ΔW‖ ≈ 1e-7‖ΔW‖ — the size of what is being measured.

    Error bound here: Householder QR is backward stable column by column (Higham, *Accuracy and Stability of
    Numerical Algorithms*, Thm. 19.4: ‖δrₖ‖ ≤ γ‖rₖ‖) and the product L Tᵀ has the usual dot-product error, so the
    computed ‖L R‖ is off by at most ≈ c·u·Σₖ‖lₖ‖‖rₖ‖ — the *unsquared* norm, like a dense float64
    reconstruction. For LoRA mixes Σₖ‖lₖ‖‖rₖ‖ ≤ √m·(Σₖ‖lₖ‖²‖rₖ‖²)^½ is within a few √m of ‖ΔW‖ unless the LoRAs
    cancel each other, so the measurement is good to ~1e-13 relative: far below both the fp16/bf16 cast error
    (1e-4 … 1e-3) and the fp32 rounding of an exact concat (~1e-8 … 1e-7), which therefore stays measurable.
    """
    if left.shape[-2] < right.shape[-1]:
        left, right = right.mT, left.mT
    if right.shape[-1] > right.shape[-2]:
        triangular = thin_qr(right.mT)[1]  # (B, k, m), R^T = Q T
        full = left @ triangular.mT
        head = left[..., :split] @ triangular[..., :split, :split].mT
    else:
        full = left @ right
        head = left[..., :split] @ right[..., :split, :]
    return _frobenius_sq(full), _frobenius_sq(head)


def _frobenius_sq(stack: torch.Tensor) -> torch.Tensor:
    """‖X‖²_F per batch item, without an elementwise-squared copy of the stack."""
    return torch.linalg.vector_norm(stack, dim=(-2, -1)).square()
