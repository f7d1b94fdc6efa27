"""Trainable LoRA adapters on a frozen UNet through forward hooks (pure torch, no ComfyUI).

A target module ``W`` (``nn.Linear`` or ``nn.Conv2d``) gets ``y = W(x) + (α/r)·B(A(dropout(x)))``, as PEFT's
``LoraLayer`` computes it: for a convolution ``A`` is a convolution with W's kernel, stride, padding and
dilation into r channels and ``B`` a 1×1 convolution (PEFT ``Conv2d``); ``A`` is Kaiming-uniform (a = √5) and ``B``
zero at the start, so the student begins as the teacher. The hook adds the LoRA term only while
``LoraSet.enabled`` is true: the *teacher* is the same network with the LoRA off (the reference scripts keep a
second full copy of the UNet for it).

Targets are chosen by diffusers module names (PEFT's rule: the name equals a target or ends with ``.target``)
so the reference script's list applies unchanged; ``name_map`` gives each model module's diffusers name.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

# The module list of diffusers' train_lcm_distill_lora_sd_wds.py / _sdxl_wds.py (LCM-LoRA: 67.5 M for SD1.5 r64).
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                   "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
KOHYA_PREFIX = "lora_unet_"


def matches_target(diffusers_name: str, targets: Iterable[str]) -> bool:
    return any(diffusers_name == t or diffusers_name.endswith("." + t) for t in targets)


def kohya_name(diffusers_name: str) -> str:
    """``lora_unet_`` + the diffusers module name with ``.`` → ``_`` (the published LCM-LoRA keys)."""
    return KOHYA_PREFIX + diffusers_name.replace(".", "_")


class LoraAdapter(nn.Module):
    """The A (down) / B (up) pair of one target module."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if isinstance(base, nn.Conv2d):
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
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_up(self.lora_down(self.dropout(x))) * self.scale


class LoraSet(nn.Module):
    """All adapters of one UNet, keyed by kohya module name; hooks them into the UNet while attached."""

    def __init__(self, targets: Mapping[str, nn.Module], rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.adapters = nn.ModuleDict({kohya_name(name): LoraAdapter(module, rank, alpha, dropout)
                                       for name, module in targets.items()})
        self._bases = {kohya_name(name): module for name, module in targets.items()}
        self.diffusers_names = {kohya_name(name): name for name in targets}
        self._handles: list = []
        self.enabled = True

    def attach(self) -> None:
        """Register the forward hooks (idempotent)."""
        if self._handles:
            return
        for key, base in self._bases.items():
            self._handles.append(base.register_forward_hook(self._hook(self.adapters[key])))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, adapter: LoraAdapter):
        def add_lora(module, args, output):
            if not self.enabled:
                return None
            return output + adapter(args[0]).to(output.dtype)
        return add_lora

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


def select_targets(unet: nn.Module, name_map: Mapping[str, str], targets: Iterable[str]) -> dict[str, nn.Module]:
    """``{diffusers module name: module}`` of the Linear/Conv2d modules of ``unet`` whose diffusers name matches.

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
        module = modules.get(model_param[: -len(".weight")])
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found[diffusers_module] = module
    return dict(sorted(found.items()))
