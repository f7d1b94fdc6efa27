"""Typed errors of the LoRA package. Every message names the file (or value) and says how to fix it.

ComfyUI shows an exception's class name and message to the user; tests inside ComfyUI compare by class
name (the pack is imported under a mangled module name, so the classes are not the test's objects).
"""
from __future__ import annotations


class LoraError(ValueError):
    """Base class: a LoRA file cannot be used as asked. Nothing has been patched when it is raised."""


class LoraFileError(LoraError):
    """The file cannot be read safely: empty, truncated, corrupt, or a pickle that needs code execution."""


class LoraFormatError(LoraError):
    """The tensors are not a LoRA layout this pack (or ComfyUI core) understands, or of an unknown model."""


class LoraTensorError(LoraError):
    """A LoRA module's tensors are invalid: NaN/Inf, up/down rank mismatch, missing half, alpha ≤ 0."""


class LoraFamilyMismatch(LoraError):
    """The LoRA was trained for another base-model family than the model it is applied to."""


class LoraCoverageError(LoraError):
    """Some LoRA modules match no weight of the model (they would be silently dropped)."""


class LoraAlreadyApplied(LoraError):
    """The model already carries a different acceleration LoRA applied through this pack."""
