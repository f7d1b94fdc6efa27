"""Synthetic LoRA files shaped like the published ones (kohya keys), written for the benchmarked UNet.

* LCM-LoRA: rank 64 on the modules diffusers' ``train_lcm_distill_lora_sd*_wds.py`` trains (attention
  projections, proj_in/out, feed-forward, resnet convs, shortcut, time embedding, down/upsamplers),
  alpha 8 as PEFT's default ``lora_alpha`` in that script.
* style LoRAs: rank 32 on attention and feed-forward only (the common style-LoRA recipe), alpha 16.

Keys: ``lora_unet_<diffusers module path, '.'→'_'>.lora_down.weight / .lora_up.weight / .alpha`` — the
format of the published LCM-LoRA files, mapped by ``comfy.lora.model_lora_keys_unet``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

LCM_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
               "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
STYLE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def _targets(unet: torch.nn.Module, suffixes: tuple[str, ...]):
    for name, module in unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(suffixes):
            yield name, module


def lora_state_dict(unet: torch.nn.Module, suffixes: tuple[str, ...], rank: int, alpha: float, seed: int,
                    device="cpu") -> dict[str, torch.Tensor]:
    """Random kohya-format LoRA tensors (fp16) for every Linear/Conv2d of ``unet`` matching ``suffixes``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, module in _targets(unet, suffixes):
        key = "lora_unet_" + name.replace(".", "_")
        if isinstance(module, torch.nn.Conv2d):
            down_shape = (rank, module.in_channels, *module.kernel_size)
            up_shape = (module.out_channels, rank, 1, 1)
        else:
            down_shape, up_shape = (rank, module.in_features), (module.out_features, rank)
        fan_in = down_shape[1] * (down_shape[2] * down_shape[3] if len(down_shape) == 4 else 1)
        down = torch.randn(down_shape, generator=generator, device=device) / fan_in ** 0.5
        up = torch.randn(up_shape, generator=generator, device=device) * 0.01
        out[key + ".lora_down.weight"] = down.half().cpu().contiguous()
        out[key + ".lora_up.weight"] = up.half().cpu().contiguous()
        out[key + ".alpha"] = torch.tensor(float(alpha))
    if not out:
        raise RuntimeError(f"no module of the UNet matches {suffixes}")
    return out


def write_lora(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Write atomically (temp file + rename); never overwrite an existing file silently."""
    from safetensors.torch import save_file

    if path.exists():
        raise FileExistsError(f"{path} exists: remove it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"ss_network_dim": str(next(
        v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight")))})
    os.replace(tmp, path)
    return path


def write_benchmark_loras(unet: torch.nn.Module, folder: Path, prefix: str, device="cpu") -> dict[str, str]:
    """LCM-LoRA + two style LoRAs for ``unet`` in ``folder``; returns role → file name."""
    specs = {"lcm": (LCM_TARGETS, 64, 8.0, 11), "style_a": (STYLE_TARGETS, 32, 16.0, 12),
             "style_b": (STYLE_TARGETS, 32, 16.0, 13)}
    names = {}
    for role, (suffixes, rank, alpha, seed) in specs.items():
        name = f"{prefix}-{role}.safetensors"
        if not (folder / name).exists():
            write_lora(folder / name, lora_state_dict(unet, suffixes, rank, alpha, seed, device))
        names[role] = name
    return names
