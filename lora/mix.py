"""Exact linear mixing of LoRAs: τ' = Σ λᵢ τᵢ (LCM-LoRA, arXiv 2311.05556, section 4).

LCM-LoRA's claim is that the acceleration vector τ_LCM and a style vector τ_style of the same base model
combine by a weighted sum of their parameter deltas, ``λ_LCM = 1.0, λ_style = 0.8`` in the paper. Per weight W
of the model, a LoRA module i contributes ``ΔWᵢ = sᵢ·UᵢDᵢ`` with ``sᵢ = αᵢ / rᵢ``; the mix is

    ΔW = Σᵢ λᵢ · sᵢ · Uᵢ Dᵢ                                                       (1)

which is exactly the product of the concatenated factors

    U' = [λ₁s₁U₁ | λ₂s₂U₂ | …],   D' = [D₁; D₂; …],   ΔW = U' D',   alpha' = rank' = Σ rᵢ          (2)

so the mix is itself a LoRA of rank Σ rᵢ with scale 1 (lossless; :func:`concat_modules`). Conv modules are
mixed over their flattened kernels ``(rank, in·kh·kw)``, the down keeping the kernel shape and the up 1x1.
For applying, the same product is kept factored (:func:`mixed_factors`): U' = [U₁|U₂|…] and D' in the
files' own dtype plus a float32 rank scale c = [λ₁s₁·1_{r₁} | λ₂s₂·1_{r₂} | …], ΔW = (U'·diag(c)) D' — the
same float32 numbers as (2) once U' is cast and scaled on the weight's device, at half the bytes for fp16 files.

Only the *style* weights may be normalised; the accelerator keeps its own weight, because LCM-LoRA's
acceleration is calibrated at λ = 1 (a rescaled LCM-LoRA stops being a consistency model):

* ``none``: λ as given.
* ``sum``: style weights rescaled so that Σ|λ_style| = budget (stacked styles no longer over-bake).
* ``l2``: style weights rescaled so that √(Σ λ_style²) = budget (an energy budget on the style vector).

Everything here is pure torch on :class:`~lora.types.ResolvedLora` objects: modules keyed by the target weight
keys of one model (:func:`lora.resolve.resolve`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..accelerators.records import FAMILY_GROUPS
from . import kinds
from .errors import MixError
from .types import LoraModule, ResolvedLora

LOG = logging.getLogger(__name__)

ROLE_ACCELERATOR = "accelerator"
ROLE_STYLE = "style"
ROLES = (ROLE_ACCELERATOR, ROLE_STYLE)
NORMALIZATIONS = ("none", "sum", "l2")


@dataclass(frozen=True)
class MixEntry:
    """One LoRA of a mix: the (resolved) file, its weight λ and its role (accelerator or style)."""

    lora: ResolvedLora
    weight: float
    role: str = ROLE_STYLE


def check_entries(entries: Sequence[MixEntry]) -> None:
    """Refuse mixes that cannot be meaningful: empty, unknown roles, all-zero weights, mixed families."""
    if not entries:
        raise MixError("the LoRA list is empty: add at least one LoRA (LCM-LoRA Stack node) before mixing.")
    for entry in entries:
        if entry.role not in ROLES:
            raise MixError(f"role {entry.role!r} of {entry.lora.name!r} is unknown; use one of {ROLES}.")
        if not math.isfinite(entry.weight):
            raise MixError(f"weight {entry.weight!r} of {entry.lora.name!r} is not a finite number.")
    if all(entry.weight == 0.0 for entry in entries):
        raise MixError("all LoRA weights are zero: the mix would change nothing; give at least one LoRA a "
                       "non-zero weight.")
    _check_one_accelerator(entries)
    families = {entry.lora.family for entry in entries} - {"unknown"}
    # a group (names that fit several families: accelerators.records.FAMILY_GROUPS) agrees with a member of it
    families = {f for f in families if not any(other in FAMILY_GROUPS.get(f, ()) for other in families)}
    if len(families) > 1:
        listing = ", ".join(f"{e.lora.name} ({e.lora.family})" for e in entries)
        raise MixError(f"LoRAs of different base families cannot be mixed: {listing}. LCM-LoRA combines only "
                       "with style LoRAs trained on the same base model; remove the LoRAs of the other family.")


def accelerators(entries: Sequence[MixEntry]) -> list[MixEntry]:
    """The entries that accelerate: role accelerator, or a file of an accelerator kind (``lora/kinds.py``), with a
    non-zero weight."""
    return [e for e in entries if e.weight != 0.0 and (e.role == ROLE_ACCELERATOR or kinds.is_accelerator(e.lora.kind))]


def _check_one_accelerator(entries: Sequence[MixEntry]) -> None:
    """Two step-distilled accelerators in one mix are refused: each is calibrated alone at its own weight, and
    their sum is neither recipe (their samplers and timesteps also differ)."""
    found = accelerators(entries)
    if len(found) > 1:
        listing = " and ".join(f"'{e.lora.name}' ({kinds.kind_name(e.lora.kind)}, {e.role})" for e in found[:2])
        raise MixError(f"two accelerators in one stack: {listing}. Keep one accelerator and mix it with style "
                       "LoRAs only (set the other's weight to 0 or remove it from the stack).")


def normalize_style_weights(entries: Sequence[MixEntry], mode: str = "none", budget: float = 1.0) -> list[float]:
    """Weights λᵢ after optional normalisation of the style weights only (see the module docstring).

    The accelerator's weight is returned unchanged. With no non-zero style weight, nothing is rescaled.
    """
    if mode not in NORMALIZATIONS:
        raise MixError(f"style normalisation {mode!r} is unknown; use one of {NORMALIZATIONS}.")
    if not (math.isfinite(budget) and budget >= 0.0):
        raise MixError(f"style budget {budget!r} must be a finite number >= 0 (1.0 is the usual choice).")
    weights = [float(entry.weight) for entry in entries]
    styles = [i for i, entry in enumerate(entries) if entry.role == ROLE_STYLE]
    if mode == "sum":
        total = sum(abs(weights[i]) for i in styles)
    elif mode == "l2":
        total = math.sqrt(sum(weights[i] ** 2 for i in styles))
    else:
        return weights
    if total == 0.0:
        return weights
    factor = budget / total
    for i in styles:
        weights[i] *= factor
    return weights


def accelerator_names(entries: Sequence[MixEntry]) -> list[str]:
    """Names of the LoRAs marked as accelerator (LCM-LoRA) in the mix."""
    return [entry.lora.name for entry in entries if entry.role == ROLE_ACCELERATOR]


def _flat(module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) of a module as 2-D matrices in the file's dtype: (out, r) and (r, in·kh·kw)."""
    up = module.up.reshape(module.up.shape[0], -1)
    down = module.down.reshape(module.rank, -1)
    if up.shape[1] != down.shape[0]:
        raise MixError(f"LoRA module with up {tuple(module.up.shape)} and down {tuple(module.down.shape)} has "
                       "inconsistent ranks; the file is damaged.")
    return up, down


@dataclass(frozen=True)
class MixedFactors:
    """Equation (2) kept factored: ΔW = (U' · diag(c)) D' with U' = [U₁|U₂|…], D' = [D₁;D₂;…] unscaled and
    ``rank_scale`` c = [λ₁s₁ (r₁ times) | λ₂s₂ (r₂ times) | …] in float32.

    U' and D' keep the dtype of the source files (fp16 files → fp16 factors, half the bytes of the float32
    concatenation); terms of different dtypes are concatenated in float32. A conv layer keeps the kernel of
    its first conv term in ``down`` (R, in, kh, kw) and a 1x1 ``up`` (out, R, 1, 1), as :func:`concat_modules`.
    """

    up: torch.Tensor
    down: torch.Tensor
    rank_scale: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the two factors (what is copied to the weight's device when the layer is patched)."""
        return self.up.numel() * self.up.element_size() + self.down.numel() * self.down.element_size()

    def scaled_up(self) -> torch.Tensor:
        """U'·diag(c) as a float32 (out, R) matrix: bit-identical to the scaled float32 concatenation."""
        return self.up.reshape(self.up.shape[0], -1).to(torch.float32) * self.rank_scale.to(self.up.device)

    def as_module(self) -> LoraModule:
        """The float32 LoRA module of equation (2) (alpha = rank, scale 1), e.g. for the export."""
        up = self.scaled_up()
        down = self.down.to(torch.float32)
        return LoraModule(down=down.contiguous(), up=up.reshape(self.up.shape).contiguous(), alpha=float(self.rank))


def _common_dtype(terms: Sequence[tuple[float, LoraModule]]) -> torch.dtype:
    """The terms' factor dtype when they all agree, else float32 (exact for fp16/bf16/fp32 sources)."""
    dtypes = {t for _, module in terms for t in (module.up.dtype, module.down.dtype)}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def mixed_factors(key: str, terms: Sequence[tuple[float, LoraModule]]) -> MixedFactors:
    """Equation (2) for one target weight ``key`` in the source dtype, with the scales λᵢ·αᵢ/rᵢ kept apart.

    ``terms`` are (λᵢ, moduleᵢ) pairs. All downs must flatten to the same input size; a conv down keeps the
    kernel shape of the first conv term and the up becomes 1x1.
    """
    dtype = _common_dtype(terms)
    ups, downs, scales, kernel = [], [], [], None
    for weight, module in terms:
        up, down = _flat(module)
        if downs and down.shape[1] != downs[0].shape[1] or ups and up.shape[0] != ups[0].shape[0]:
            raise MixError(f"LoRAs disagree on the shape of {key}: {tuple(up.shape[0:1])}x{down.shape[1]} vs "
                           f"{ups[0].shape[0]}x{downs[0].shape[1]}; they were made for different models.")
        if module.down.ndim == 4 and kernel is None:
            kernel = tuple(module.down.shape[1:])
        ups.append(up.to(dtype))
        downs.append(down.to(dtype))
        # λᵢ·sᵢ is rounded to float32 once, as ``up.float() * (λᵢ·sᵢ)`` does with a Python scalar.
        scales.append(torch.full((module.rank,), weight * module.scale, dtype=torch.float32))
    up_cat, down_cat = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
    rank = int(down_cat.shape[0])
    if kernel is not None:
        up_cat, down_cat = up_cat.reshape(up_cat.shape[0], rank, 1, 1), down_cat.reshape(rank, *kernel)
    return MixedFactors(up=up_cat.contiguous(), down=down_cat.contiguous(), rank_scale=torch.cat(scales))


def concat_modules(key: str, terms: Sequence[tuple[float, LoraModule]]) -> LoraModule:
    """Equation (2) in float32: one LoRA module of rank Σ rᵢ with ΔW = Σ λᵢ sᵢ Uᵢ Dᵢ exactly (alpha = rank,
    scale 1), U' = [λ₁s₁U₁|…] pre-scaled. The export's input; the mixer applies :func:`mixed_factors`."""
    return mixed_factors(key, terms).as_module()


def mix_terms(entries: Sequence[MixEntry], weights: Sequence[float]) -> dict[str, list[tuple[float, LoraModule]]]:
    """Per target key, the (λᵢ, moduleᵢ) pairs of every LoRA touching it; zero weights are left out."""
    terms: dict[str, list[tuple[float, LoraModule]]] = {}
    for entry, weight in zip(entries, weights, strict=True):
        if weight == 0.0:
            continue
        for key, module in entry.lora.modules.items():
            terms.setdefault(key, []).append((float(weight), module))
    return terms


def concat_mix(entries: Sequence[MixEntry], weights: Sequence[float] | None = None) -> dict[str, LoraModule]:
    """The whole mix as one LoRA: target key → concatenated module (equation 2). Exact, rank Σ rᵢ per layer."""
    check_entries(entries)
    weights = [e.weight for e in entries] if weights is None else list(weights)
    return {key: concat_modules(key, terms) for key, terms in mix_terms(entries, weights).items()}


def factor_mix(entries: Sequence[MixEntry], weights: Sequence[float] | None = None) -> dict[str, MixedFactors]:
    """The whole mix as target key → :class:`MixedFactors` (source-dtype factors, float32 rank scales)."""
    check_entries(entries)
    weights = [e.weight for e in entries] if weights is None else list(weights)
    return {key: mixed_factors(key, terms) for key, terms in mix_terms(entries, weights).items()}


def mixed_delta(entries: Sequence[MixEntry], key: str, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Reference ΔW of equation (1) for one key, summed term by term (dense; used to check the exports)."""
    weights = [e.weight for e in entries] if weights is None else list(weights)
    total = None
    for weight, module in mix_terms(entries, weights).get(key, []):
        part = weight * module.delta()
        total = part if total is None else total + part
    if total is None:
        raise MixError(f"no LoRA in the mix touches {key}.")
    return total
