"""Trainable LoRA adapters for a frozen UNet, applied as weight functions (pure torch, no ComfyUI).

A target module ``W`` (``nn.Linear`` or ``nn.Conv2d``) computes with ``W' = W + (α/r)·B·A`` while the LoRA is
on. That is the layer PEFT's ``LoraLayer`` computes, ``y = W(x) + (α/r)·B(A(x))``, rewritten in weight space (a
linear map: ``B(A(x)) = (B·A)(x)``): for a convolution ``A`` is a convolution with W's kernel, stride, padding and
dilation into r channels and ``B`` a 1×1 convolution (PEFT ``Conv2d``), so ``B·A`` is the (out, in, kh, kw)
kernel ``Σ_r B[o, r]·A[r, i, kh, kw]`` of the same convolution. ``A`` is Kaiming-uniform (a = √5) and ``B`` zero at
the start (PEFT's init), so the student begins as the teacher. The parameterisation (``lora_down`` = A,
``lora_up`` = B, scale α/r) is PEFT's, so gradients equal PEFT's (``tests/test_distill_parity.py``).

The weight form is how ComfyUI applies a trained adapter: core's ``TrainLoraNode`` registers the same kind of
callable with ``ModelPatcher.add_weight_wrapper`` on a clone of the model, and ComfyUI's layers (``comfy/ops.py``
``cast_bias_weight``) call it on a *copy* of the weight at every forward, only while that clone is loaded. No
hook or attribute of a module is touched. The LoRA is added only while ``LoraSet.enabled`` is true: the
*teacher* is the same network with the LoRA off (the reference scripts keep a second full copy of the UNet).

PEFT's ``lora_dropout`` (dropout on the LoRA's input) has no weight form; the trainer refuses values > 0.

Targets are chosen by diffusers module names (PEFT's rule: the name equals a target or ends with ``.target``)
so the reference script's list applies unchanged; ``name_map`` gives each model module's diffusers name.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch
from torch import nn

# The module list of diffusers' train_lcm_distill_lora_sd_wds.py / _sdxl_wds.py (LCM-LoRA: 67.5 M for SD1.5 r64).
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
KOHYA_PREFIX = "lora_unet_"


class Target(NamedTuple):
    """A LoRA target: the module's name in the model (``input_blocks.1.0.in_layers.2``) and the module."""

    name: str
    module: nn.Module


def matches_target(diffusers_name: str, targets: Iterable[str]) -> bool:
    return any(diffusers_name == t or diffusers_name.endswith("." + t) for t in targets)


def kohya_name(diffusers_name: str) -> str:
    """``lora_unet_`` + the diffusers module name with ``.`` → ``_`` (the published LCM-LoRA keys)."""
    return KOHYA_PREFIX + diffusers_name.replace(".", "_")


class LoraAdapter(nn.Module):
    """The A (down) / B (up) pair of one target module."""

    def __init__(self, base: nn.Module, rank: int, alpha: float):
        super().__init__()
        if isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise TypeError(f"LoRA targets must be ungrouped convolutions (this one has {base.groups} groups)")
            self.lora_down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding,
                                       base.dilation, bias=False)
            self.lora_up = nn.Conv2d(rank, base.out_channels, 1, 1, bias=False)
        elif isinstance(base, nn.Linear):
            self.lora_down = nn.Linear(base.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        else:
            raise TypeError(f"LoRA targets must be Linear or Conv2d layers, not {type(base).__name__}")
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def delta_weight(self) -> torch.Tensor:
        """(α/r)·B·A in the base weight's layout: (out, in) or (out, in, kh, kw)."""
        down, up = self.lora_down.weight, self.lora_up.weight
        if down.dim() == 4:
            return torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * self.scale
        return (up @ down) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The LoRA branch in activation space, (α/r)·B(A(x)) (PEFT's form; tests compare the two)."""
        return self.lora_up(self.lora_down(x)) * self.scale


class LoraWeight:
    """ComfyUI weight function of one target: ``W ↦ W + (α/r)·B·A`` while the set is enabled, else ``W``.

    ComfyUI hands over a copy of the stored weight, cast to the layer's compute dtype; it is detached (the base
    weights are never trained, and on hosts that load them with ``requires_grad`` no gradient reaches them) and
    the sum is cast back to that dtype, as core's ``LoRAAdapter``/``LoraDiff`` weight functions do."""

    def __init__(self, lora_set: LoraSet, adapter: LoraAdapter):
        self.lora_set, self.adapter = lora_set, adapter

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        weight = weight.detach()
        if not self.lora_set.enabled:
            return weight
        return (weight + self.adapter.delta_weight()).to(weight.dtype)


def frozen_weight(weight: torch.Tensor) -> torch.Tensor:
    """ComfyUI weight function of a base weight that is not a target: the detached copy ComfyUI hands over.

    Registered where a stored weight is an inference tensor (ComfyUI loads models under ``torch.inference_mode``;
    autograd cannot save those for backward) or requires grad (0.3.75 loads them so): the layer then computes with
    a plain, gradient-free copy, and the stored tensor is neither replaced nor given a gradient."""
    return weight.detach()


class LoraSet(nn.Module):
    """All adapters of one UNet, keyed by kohya module name."""

    def __init__(self, targets: Mapping[str, Target], rank: int, alpha: float):
        super().__init__()
        self.adapters = nn.ModuleDict({kohya_name(name): LoraAdapter(target.module, rank, alpha)
                                       for name, target in targets.items()})
        self.diffusers_names = {kohya_name(name): name for name in targets}
        self.model_names = {kohya_name(name): target.name for name, target in targets.items()}
        self.enabled = True

    def weight_functions(self) -> dict[str, LoraWeight]:
        """``{model module name: weight function}`` of every target."""
        return {self.model_names[key]: LoraWeight(self, adapter) for key, adapter in self.adapters.items()}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.adapters.parameters())

    def kohya_state_dict(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """``<name>.lora_down.weight``, ``<name>.lora_up.weight``, ``<name>.alpha`` (scalar) per module."""
        out = {}
        for key, adapter in self.adapters.items():
            out[f"{key}.lora_down.weight"] = adapter.lora_down.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.lora_up.weight"] = adapter.lora_up.weight.detach().to("cpu", dtype).contiguous()
            out[f"{key}.alpha"] = torch.tensor(adapter.alpha, dtype=dtype)
        return out


def select_targets(unet: nn.Module, name_map: Mapping[str, str], targets: Iterable[str]) -> dict[str, Target]:
    """``{diffusers module name: Target}`` of the Linear/Conv2d modules of ``unet`` whose diffusers name matches.

    ``name_map`` maps a diffusers *parameter* name (``….weight``) to the model's own parameter name.
    """
    targets = tuple(targets)
    modules = dict(unet.named_modules())
    found = {}
    for diffusers_param, model_param in name_map.items():
        if not diffusers_param.endswith(".weight"):
            continue
        diffusers_module = diffusers_param[: -len(".weight")]
        if not matches_target(diffusers_module, targets):
            continue
        model_name = model_param[: -len(".weight")]
        module = modules.get(model_name)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found[diffusers_module] = Target(model_name, module)
    return dict(sorted(found.items()))
