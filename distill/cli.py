"""Command line: ``python -m lcm_lora_pack.distill --checkpoint X --data_dir D --output NAME [options]``.

Boots ComfyUI headless (``COMFYUI_PATH`` or ``--comfyui_path`` names the tree), loads the checkpoint as
``CheckpointLoaderSimple`` does (``comfy.sd.load_checkpoint_guess_config``), encodes the data, trains, and
writes the LCM-LoRA into the LoRA folder. Several processes: ``torchrun --nproc_per_node N -m
lcm_lora_pack.distill ...`` (NCCL on GPUs, gloo on CPU; ``--train_batch_size`` is per process).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from .config import LR_SCHEDULERS, MIXED_PRECISION, SAVE_DTYPES, DistillConfig
from .errors import DistillConfigError, DistillError, DistillModelError

LOG = logging.getLogger("lcm_lora_pack.distill")
HELP = {
    "resolution": "Square training resolution in pixels (images are resized, then cropped).",
    "train_batch_size": "Batch size per process (the global batch is this × number of processes).",
    "max_train_steps": "Number of optimizer steps.",
    "learning_rate": "AdamW learning rate for the LoRA.",
    "lr_scheduler": f"Learning-rate schedule: {', '.join(LR_SCHEDULERS)}.",
    "lr_warmup_steps": "Warm-up steps of the schedule (ignored by 'constant').",
    "lora_rank": "LoRA rank r.", "lora_alpha": "LoRA alpha (scale = alpha / rank).",
    "lora_dropout": "Dropout on the LoRA input: only 0 (the LoRA trains as a weight function).",
    "lora_target_modules": "Comma-separated diffusers module names the LoRA targets (default: the script's 14).",
    "w_min": "Lowest guidance scale w drawn per sample (default 5 for SD1.x/SD2.x, 3 for SDXL).",
    "w_max": "Highest guidance scale w drawn per sample.",
    "num_ddim_timesteps": "Points of the DDIM solver grid (skip k = 1000 / this).",
    "loss_type": "Consistency loss: 'huber' (pseudo-Huber, LCM-LoRA) or 'l2'.",
    "huber_c": "The pseudo-Huber c.", "timestep_scaling_factor": "Timestep scaling of the boundary condition.",
    "adam_beta1": "AdamW beta1.", "adam_beta2": "AdamW beta2.", "adam_weight_decay": "AdamW weight decay.",
    "adam_epsilon": "AdamW epsilon.", "max_grad_norm": "Gradient-norm clipping.",
    "mixed_precision": f"Autocast precision: {', '.join(MIXED_PRECISION)} (LoRA parameters stay fp32).",
    "gradient_checkpointing": "Recompute UNet blocks in the backward pass (less memory, slower).",
    "seed": "Seed of LoRA init, data order, noise, timesteps, w and crops.",
    "center_crop": "Centre-crop images (default: random crop).", "random_flip": "Randomly flip images.",
    "checkpointing_steps": "Save a training checkpoint every N steps.",
    "checkpoints_total_limit": "Keep at most this many checkpoints.",
    "save_dtype": f"Precision of the written LoRA: {', '.join(SAVE_DTYPES)}.",
    "teacher_sampling_steps": "Prompts-only mode: DDIM steps the teacher takes to make each x0.",
    "teacher_guidance_scale": "Prompts-only mode: classifier-free guidance of the teacher's x0.",
    "validation_draws": "If > 0: loss on this many fixed batches before and after training (in the metadata).",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lcm_lora_pack.distill", description=(
        "Distil an LCM-LoRA (latent consistency distillation, arXiv 2310.04378 / 2311.05556) from a ComfyUI "
        "checkpoint, as diffusers' train_lcm_distill_lora_*.py scripts do."))
    parser.add_argument("--checkpoint", required=True, help="Checkpoint file path, or a name in ComfyUI's "
                        "models/checkpoints.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="Folder of images with same-stem .txt captions.")
    source.add_argument("--prompts_file", help="Text file, one prompt per line: the teacher makes the images "
                        "(data-free; not what the paper does).")
    parser.add_argument("--output", required=True, help="File name of the LoRA written into --loras_dir.")
    parser.add_argument("--loras_dir", help="LoRA folder (default: ComfyUI's models/loras).")
    parser.add_argument("--output_dir", help="Checkpoint folder (default: ComfyUI output/lcm_distill/<output>).")
    parser.add_argument("--resume_from_checkpoint", help="A checkpoint-<step>.pt file, or 'latest'.")
    parser.add_argument("--cache_dir", help="Cache the encoded latents/text here and reuse them.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing LoRA of that name.")
    parser.add_argument("--comfyui_path", help="ComfyUI tree (default: $COMFYUI_PATH).")
    parser.add_argument("--summary_json", help="Write steps, losses and the output path as JSON here.")
    defaults = DistillConfig()
    for item in fields(DistillConfig):
        if item.name == "world_size":
            continue
        default = getattr(defaults, item.name)
        flag = f"--{item.name}"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=HELP[item.name])
        elif item.name == "lora_target_modules":
            parser.add_argument(flag, default=",".join(default), help=HELP[item.name])
        elif item.name in ("w_min", "checkpoints_total_limit"):
            kind = float if item.name == "w_min" else int
            parser.add_argument(flag, type=kind, default=None, help=HELP[item.name])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=HELP[item.name] +
                                f" Default {default}.")
    return parser


def config_from_args(args) -> DistillConfig:
    values = {f.name: getattr(args, f.name) for f in fields(DistillConfig) if f.name != "world_size"}
    values["lora_target_modules"] = tuple(m.strip() for m in values["lora_target_modules"].split(",") if m.strip())
    return DistillConfig(**values)


def boot_comfy(comfyui_path: str | None):
    """Import ComfyUI headless (no server, no custom nodes); returns ``folder_paths``."""
    import torch

    root = Path(comfyui_path or os.environ.get("COMFYUI_PATH") or "")
    if not (root / "comfy" / "sd.py").is_file():
        raise DistillModelError(f"no ComfyUI tree at '{root}'; set COMFYUI_PATH or pass --comfyui_path.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = not torch.cuda.is_available()
    args.disable_api_nodes = True
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    import folder_paths

    return folder_paths


def load_checkpoint_comfy(name: str, folder_paths, mixed_precision: str):
    """``(model, clip, vae)`` of a checkpoint path or name, loaded the ComfyUI way."""
    import comfy.sd
    import torch

    path = Path(name)
    if not path.is_file():
        found = folder_paths.get_full_path("checkpoints", name)
        if found is None:
            raise DistillModelError(f"checkpoint '{name}' is neither a file nor in ComfyUI's models/checkpoints "
                                    f"({folder_paths.get_filename_list('checkpoints')[:10]}).")
        path = Path(found)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    options = {"dtype": dtype} if torch.cuda.is_available() else {}
    try:
        out = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True,
                                                    embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                                    model_options=options)
    except RuntimeError as error:
        raise DistillModelError(f"ComfyUI cannot load {path}: {error}") from error
    return out[0], out[1], out[2]


def _setup_distributed():
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist


def _progress_bar(total: int, rank: int, start: int):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="distill", disable=rank != 0)

    def update(step: int, total_steps: int, loss: float) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{loss:.5f}")
        bar.refresh()
    return bar, update


def check_paths(args) -> None:
    """Folders and files the run writes at its end, checked before anything is loaded or trained."""
    if args.output_dir and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise DistillConfigError(f"--output_dir {args.output_dir} is a file; give a folder for the checkpoints "
                                 "(it is created if missing).")
    if args.cache_dir and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise DistillConfigError(f"--cache_dir {args.cache_dir} is a file; give a folder for the encoded data.")
    if args.summary_json:
        summary = Path(args.summary_json)
        if summary.is_dir():
            raise DistillConfigError(f"--summary_json {summary} is a folder; give a file name such as "
                                     f"{summary / 'summary.json'}.")
        if not summary.parent.is_dir():
            raise DistillConfigError(f"--summary_json {summary}: its folder {summary.parent} does not exist; create "
                                     "it or write the summary elsewhere.")


def run(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    config.validate()
    check_paths(args)
    dist = _setup_distributed()
    rank = dist.get_rank() if dist.is_initialized() else 0
    folder_paths = boot_comfy(args.comfyui_path)
    from .api import distill_lcm_lora, load_samples

    samples = load_samples(data_dir=args.data_dir, prompts_file=args.prompts_file)
    model, clip, vae = load_checkpoint_comfy(args.checkpoint, folder_paths, config.mixed_precision)
    loras_dir = Path(args.loras_dir or folder_paths.get_folder_paths("loras")[0])
    run_dir = Path(args.output_dir or Path(folder_paths.get_output_directory()) / "lcm_distill" /
                   Path(args.output).stem)
    bar, update = _progress_bar(config.max_train_steps, rank, 0)
    try:
        result = distill_lcm_lora(model, clip, samples, config, loras_dir, args.output, vae=vae,
                                  checkpoint_dir=run_dir, resume_from_checkpoint=args.resume_from_checkpoint,
                                  cache_dir=args.cache_dir, source_name=Path(args.checkpoint).name,
                                  overwrite=args.overwrite, progress=update, private_copy=False)
    finally:
        bar.close()
    summary = {"output": str(result.path) if result.path else None, "steps": result.steps, "losses": result.losses,
               "validation": result.validation,
               "checkpoint_dir": str(run_dir), "rank": rank}
    if args.summary_json and rank == 0:
        Path(args.summary_json).write_text(json.dumps(summary))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = run(argv)
    except DistillError as error:
        LOG.error("%s: %s", type(error).__name__, error)
        return 2
    except ValueError as error:  # ExportPathError and other input errors
        LOG.error("%s: %s", type(error).__name__, error)
        return 2
    LOG.info("wrote %s after %d steps", summary["output"], summary["steps"])
    return 0
