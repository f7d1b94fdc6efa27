"""The distilled LCM-LoRA file: kohya keys like the published LCM-LoRAs, alpha tensors, descriptive metadata.

Keys ``lora_unet_<diffusers module name, . → _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (the
conversion diffusers' SDXL LCM-LoRA script applies to PEFT's state dict); metadata (all str) says what it is:
``modelspec.title``/``modelspec.description`` name it an LCM-LoRA (the pack's loader detects kind *lcm* from
them), and ``lcmpack.*`` keys carry the base family, the recipe's hyper-parameters, the steps done and the data
fingerprint. Written by ``lora/safe_write.py`` (validated name, no overwrite, atomic).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..lora.safe_write import ExportPathError, atomic_save_safetensors, check_target, export_file_name

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def check_output_name(folder: str | Path, name: str, overwrite: bool = False) -> Path:
    """Validate the output before training starts: plain name inside ``folder``, not existing, folder writable."""
    folder = Path(folder)
    target = folder / export_file_name(name)
    if not folder.is_dir():
        raise ExportPathError(f"LoRA folder {folder} does not exist; create it or pass ComfyUI's models/loras.")
    if target.exists() and not target.is_dir() and not overwrite:
        raise ExportPathError(f"{target.name} already exists in {folder}; choose another output name (existing "
                              "LoRAs are never overwritten silently).")
    check_target(folder, target, overwrite)  # read-only folder, a folder in the file's way: before training
    return target


def lora_metadata(*, family: str, prediction: str, config, steps: int, losses: list[float], data_fingerprint: str,
                  data_mode: str, samples: int, source: str, modules: int) -> dict[str, str]:
    title = f"LCM-LoRA ({family}) distilled from {source or 'a ComfyUI model'}"
    return {
        "modelspec.title": title,
        "modelspec.description": ("Latent consistency distillation LoRA (LCM-LoRA, arXiv 2311.05556; LCM arXiv "
                                  "2310.04378) made with lcm-lora-pack's trainer; sample with 2-8 LCM steps, cfg 1-2."),
        "ss_output_name": title,
        "lcmpack.version": "1",
        "lcmpack.kind": "lcm",
        "lcmpack.base_family": family,
        "lcmpack.distill.prediction": prediction,
        "lcmpack.distill.hyperparameters": json.dumps(config.recipe_values() | {
            "mixed_precision": config.mixed_precision, "max_train_steps": config.max_train_steps}, sort_keys=True),
        "lcmpack.distill.steps": str(steps),
        "lcmpack.distill.final_loss": repr(losses[-1]) if losses else "",
        "lcmpack.distill.data_fingerprint": data_fingerprint,
        "lcmpack.distill.data_mode": data_mode,
        "lcmpack.distill.samples": str(samples),
        "lcmpack.distill.source": source,
        "lcmpack.distill.modules": str(modules),
    }


def write_lora(lora_set, folder: str | Path, name: str, metadata: dict[str, str], save_dtype: str = "fp16",
               overwrite: bool = False) -> Path:
    tensors = lora_set.kohya_state_dict(SAVE_DTYPES[save_dtype])
    bad = [k for k, v in tensors.items() if not torch.isfinite(v.float()).all()]
    if bad:
        raise ValueError(f"LoRA tensors {bad[:3]} are not finite; nothing was written.")
    return atomic_save_safetensors(tensors, metadata, folder, name, overwrite=overwrite)


__all__ = ["ExportPathError", "check_output_name", "lora_metadata", "write_lora"]
