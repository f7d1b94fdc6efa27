"""Typed errors of the LoRA package (reading, applying, mixing, export). Every message names the file (or
value) and says how to fix it. All are :class:`~errors.LCMPackError` s (see the pack's ``errors.py``).

ComfyUI shows an exception's class name and message to the user; tests inside ComfyUI compare by class
name (ComfyUI imports the pack under its own module name, so the classes are not the test's objects).
"""
from __future__ import annotations

from ..errors import LCMPackError


class LoraError(LCMPackError):
    """Base class: a LoRA file cannot be used as asked. Nothing has been patched when it is raised."""


class LoraFileError(LoraError):
    """The file cannot be read safely: empty, truncated, corrupt, or a pickle that needs code execution."""


class LoraFormatError(LoraError):
    """The tensors are not a LoRA layout this pack (or ComfyUI core) understands, or of an unknown model."""


class LoraTensorError(LoraError):
    """A LoRA module's tensors are invalid: NaN/Inf, up/down rank mismatch, missing half, alpha ≤ 0."""


class LoraFamilyMismatch(LoraError):
    """The LoRA was trained for another base-model family than the model it is applied to."""


class LoraExpertMismatch(LoraError):
    """A file of a two-expert pair (Wan 2.2 Lightning's HIGH / LOW) on the other expert's model, or both on one."""


class LoraCoverageError(LoraError):
    """Some LoRA modules match no weight of the model (they would be silently dropped)."""


class LoraAlreadyApplied(LoraError):
    """The model already carries this LoRA, or a different acceleration LoRA, applied through this pack."""


class LoraAppliedTwice(LoraAlreadyApplied):
    """One stack holds the same LoRA twice (same file, a byte-identical copy or the same tensors re-saved)."""


class MixError(LCMPackError):
    """A LoRA mix that cannot be built as asked; the message names the value and the fix."""


class ExportError(LCMPackError):
    """A merged LoRA export that cannot be written as asked (mode, adapters, names, dtype)."""


class RankError(ExportError):
    """An SVD target rank outside 1 .. the concatenated rank of a layer."""


class ExportPathError(ExportError):
    """An export file name or folder that cannot be written safely (path parts, existing file, permissions)."""
