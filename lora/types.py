"""Shared in-memory types of the LoRA package (the contract between reading, resolving, mixing and export).

A LoRA module adds ΔW = scale · up @ down to one weight W (``scale = alpha / rank``; for conv layers the
product is taken over the flattened kernel). Kohya files keep ``alpha`` as a tensor; PEFT keeps
``lora_alpha`` in ``adapter_config.json``; a file without alpha means scale 1.0 (alpha = rank).

The path of a LoRA: a file is read into a :class:`LoraFile` (modules keyed by the *file's* module names),
resolved against one model into a :class:`ResolvedLora` (modules keyed by the *model's* weight keys), put
with its weight λ and role into a :class:`~lora.mix.MixEntry`, and a stack of those is applied or exported.
A :class:`StackEntry` is what the ``LoRA Stack`` node passes on (a file name, not yet read).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

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
class LoraIdentity:
    """Who a LoRA is, whatever stage it is at: display name, file hash, layout, base family, acceleration kind."""

    name: str
    sha256: str
    format: str
    family: str
    kind: str


@dataclass
class LoraFile(LoraIdentity):
    """A LoRA read from disk (:func:`lora.io.read_lora_file`), not yet tied to a model.

    ``modules`` maps the file's own module names (e.g. ``lora_unet_down_blocks_0_attentions_0_proj_in`` or
    ``unet.down_blocks.0.attentions.0.proj_in``) to plain LoRA updates with alpha resolved. ``extra`` holds
    the tensors of modules left to ComfyUI core, under their file keys (LoHa, LoKr, DoRA with ``dora_scale``,
    LoCon ``lora_mid``, full diffs). ``sha256`` is the file's hash, ``content_sha256`` the tensors' hash.
    """

    modules: dict[str, LoraModule] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    # Added by the reader (compatible extension): where alpha came from, assumptions made, detection evidence.
    notes: list[str] = field(default_factory=list)
    path: str = ""
    # sha256 over the sorted tensor names and bytes: equal for the same LoRA saved twice (header order differs).
    content_sha256: str = ""


@dataclass
class ResolvedLora(LoraIdentity):
    """A LoRA resolved against one model (:func:`lora.resolve.resolve`): what mixing, applying and export read.

    ``modules`` maps the model's weight keys (``diffusion_model.…weight``, ``clip_l.…weight``) to the plain
    LoRA updates that land there. ``core_tensors`` / ``core_targets`` are the modules left to ComfyUI core,
    as the file's own tensors under the spelling core's key map knows (``core_targets``: spelling → weight
    key); core parses them itself (``comfy.lora.load_lora``). ``matched`` / ``total`` count modules (plain and
    core) that landed / that the file has; ``unmatched`` describes the ones that did not. The identity fields
    are the file's (:class:`LoraFile`).
    """

    modules: dict[str, LoraModule] = field(default_factory=dict)
    content_sha256: str = ""
    core_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    core_targets: dict[str, str] = field(default_factory=dict)
    matched: int = 0
    total: int = 0
    unet_matched: int = 0
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_core_adapters(self) -> bool:
        """Whether some of its modules are adapters only core can apply (LoHa/LoKr/DoRA/LoCon/diffs)."""
        return bool(self.core_targets)


class StackEntry(NamedTuple):
    """One item of an ``LCMPACK_LORA_STACK`` (the LoRA Stack node's output): file name in models/loras, weight λ,
    role ("accelerator" or "style")."""

    lora_name: str
    weight: float
    role: str
