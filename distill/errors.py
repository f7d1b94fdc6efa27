"""Typed errors of the distillation trainer. Every message names the value (file, option, step) and the fix.

ComfyUI shows an exception's class name and message to the user; nothing has been written to ``models/loras``
when one of these is raised (checkpoints already on disk stay valid).
"""
from __future__ import annotations

from ..errors import LCMPackError


class DistillError(LCMPackError):
    """Base class: the distillation cannot run as asked."""


class DistillConfigError(DistillError):
    """A hyper-parameter is out of range or options contradict each other."""


class DistillDataError(DistillError):
    """The training data is missing, empty, unreadable, or images lack captions."""


class DistillModelError(DistillError):
    """The model is of an unsupported family or prediction type (or not a ComfyUI UNet model)."""


class DistillLossError(DistillError):
    """The loss became NaN/Inf: training stopped; the last good checkpoint is kept."""


class DistillCheckpointError(DistillError):
    """A checkpoint to resume from is missing, corrupt, or from a different run configuration."""
