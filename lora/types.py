"""Shared in-memory types of the LoRA package (the contract between reading, mixing and export).

A LoRA module adds ΔW = scale · up @ down to one weight W (``scale = alpha / rank``; for conv layers the
product is taken over the flattened kernel). Kohya files keep ``alpha`` as a tensor; PEFT keeps
``lora_alpha`` in ``adapter_config.json``; a file without alpha means scale 1.0 (alpha = rank).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoraModule:
    """One low-rank update. ``down``: (rank, in) or (rank, in, kh, kw); ``up``: (out, rank) or (out, rank, 1, 1)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def delta(self) -> torch.Tensor:
        """ΔW = (alpha / rank) · up @ down, shaped like the target weight."""
        up = self.up.reshape(self.up.shape[0], -1).to(torch.float32)
        down = self.down.reshape(self.rank, -1).to(torch.float32)
        product = (up @ down) * self.scale
        if self.down.ndim == 4:
            return product.reshape(self.up.shape[0], *self.down.shape[1:])
        return product


@dataclass
class LoraFile:
    """A LoRA read from disk.

    ``modules`` maps the *target weight key* of the ComfyUI model (e.g.
    ``diffusion_model.input_blocks.1.1.proj_in.weight`` or ``clip_l.transformer.text_model...weight``) to its
    update, once resolved against a model; before resolution, keys are the file's own module names.
    ``extra`` holds tensors of adapters left to ComfyUI core (LoHa, LoKr, DoRA ``dora_scale``, full diffs).
    """

    name: str
    sha256: str
    format: str
    family: str
    kind: str
    modules: dict[str, LoraModule] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    # Added by the reader (compatible extension): where alpha came from, assumptions made, detection evidence.
    notes: list[str] = field(default_factory=list)
    path: str = ""
    # sha256 over the sorted tensor names and bytes: equal for the same LoRA saved twice (header order differs).
    content_sha256: str = ""
