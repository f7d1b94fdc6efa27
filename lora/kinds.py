"""The accelerator kinds, as the LoRA side reads them from the one registry (``accelerators/registry.py``).

A *kind* says what a LoRA (or checkpoint) was distilled for, and so how it must be sampled. Everything about a
kind -- names, published file names, content signature, recipe, advice, sources -- is one record in
``accelerators.registry.ACCELERATORS``; this module only answers the LoRA side's questions from it, at call time
(a record added to the registry is seen without an edit here).
"""
from __future__ import annotations

from .. import accelerators

STYLE = "style"
# The loader's kinds at import (its combo); functions below read the registry live.
KINDS = accelerators.loadable_kinds()
STYLE_ADVICE = ("Style LoRA (no acceleration kind in metadata, file name or content): applied as is; sampling "
                "unchanged. If it is an accelerator, pick its kind on the loader's 'kind' input.")
DEFAULT_STYLE_WEIGHT_ADVICE = ("the authors publish no style-weight advice for {name}: start the style at 0.8-1.0 "
                               "with the accelerator at 1.0 and lower the style if the image burns.")


def known_kinds() -> tuple[str, ...]:
    """Kinds a file may carry (``lcmpack.kind``, the loader's ``kind`` input): the loadable ones, then style."""
    return (*accelerators.loadable_kinds(), STYLE)


def kind_name(kind: str) -> str:
    if kind == STYLE:
        return "style"
    record = accelerators.get(kind)
    return record.title if record is not None else kind


def is_accelerator(kind: str) -> bool:
    return accelerators.get(kind) is not None


def is_loadable(kind: str) -> bool:
    """A kind a LoRA the loader applies may carry (``lcmpack.kind``, the loader's ``kind`` input)."""
    record = accelerators.get(kind)
    return record is not None and record.loadable


def kind_from_text(text: str, loadable_only: bool = False, family: str | None = None) -> str | None:
    """The accelerator kind a file name or a title names, if any (first matching record; linear, bounded).
    ``loadable_only``: only kinds of LoRAs the loader applies; ``family``: only a record for the LoRA's measured
    family (``accelerators.records.kind_fits_family``: a FLUX accelerator's name on an SD LoRA does not make it one)."""
    record = accelerators.detect_name(text, loadable_only, family)
    return None if record is None else record.kind


def sampler_advice(kind: str) -> str:
    record = accelerators.get(kind)
    return STYLE_ADVICE if record is None else record.advice


def style_weight_advice(kind: str) -> str:
    """What the accelerator's authors say about the weight of style LoRAs mixed with it (or that they say nothing)."""
    record = accelerators.get(kind)
    if record is not None and record.style_weight:
        return record.style_weight
    return DEFAULT_STYLE_WEIGHT_ADVICE.format(name=kind_name(kind))
