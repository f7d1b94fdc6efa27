"""Distil an LCM-LoRA from the connected model: the LCM-LoRA training recipe as a node.

Thin: data loading, the recipe, checkpoints and the file live in ``distill/``; this node resolves folders,
drives ComfyUI's progress bar and interrupt, and returns the LoRA's name and the loss curve.
"""
from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..distill.api import distill_lcm_lora, load_samples
from ..distill.config import DistillConfig
from ..distill.data import allowed_roots, confine, scan_image_folder
from ..distill.errors import DistillDataError
from ..distill.plot import loss_curve_image
from .common import CATEGORY_ROOT, NODE_PREFIX, check_inputs, run_every_time

LOG = logging.getLogger(__name__)
CATEGORY_DISTILL = f"{CATEGORY_ROOT}/distill"
RUN_FOLDER = "lcmpack_distill"


def _image_samples(data_dir: str) -> list:
    """The samples of ``data_dir``, a folder inside ComfyUI's input folder (or inside a folder the server owner
    allows in ``$LCMPACK_DISTILL_DATA_ROOTS``), checked after resolving symlinks; errors name only ``data_dir``."""
    roots = allowed_roots(folder_paths.get_input_directory())
    folder = confine(data_dir, roots)
    return scan_image_folder(folder, label=data_dir.strip()[:200], roots=roots)


def _run_folder(output_name: str) -> Path:
    """Checkpoints and the encoded cache of a run: ComfyUI's system-user folder ``user/__lcmpack_distill``, which
    no HTTP route serves (``/view`` would hand the output folder's files to any client). Hosts before the
    system-user API get the same path (their user routes only serve registered user ids)."""
    system_dir = getattr(folder_paths, "get_system_user_directory", None)
    root = Path(system_dir(RUN_FOLDER) if system_dir else Path(folder_paths.get_user_directory()) / f"__{RUN_FOLDER}")
    return root / Path(output_name.strip()).stem


class DistillLCMLoRA(io.ComfyNode):
    """Latent consistency distillation of an LCM-LoRA from the input model (the teacher)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}DistillLCMLoRA",
            display_name="Distill LCM-LoRA",
            category=CATEGORY_DISTILL,
            description="Trains an LCM-LoRA for this model with the LCM-LoRA recipe (latent consistency distillation, "
                        "arXiv 2310.04378 / 2311.05556, as diffusers' train_lcm_distill_lora scripts compute it) and "
                        "writes it to models/loras. Data: a folder of images with same-stem .txt captions, or "
                        "prompts only (the teacher makes the images). Checkpoints every N steps; Cancel keeps the "
                        "last checkpoint, and 'resume' continues from it.",
            inputs=[
                io.Model.Input("model", tooltip="The teacher: an SD1.x, SD2.x, SDXL, SSD-1B or Vega model (your "
                                                "checkpoint or fine-tune, with any LoRAs already applied)."),
                io.Clip.Input("clip", tooltip="The model's text encoder (encodes the captions / prompts)."),
                io.String.Input("output_name", default="my_lcm_lora",
                                tooltip="File name of the LoRA in models/loras (.safetensors added; never overwritten)."),
                io.String.Input("data_dir", default="",
                                tooltip="Folder of images with same-stem .txt captions, relative to ComfyUI's input "
                                        "folder (folders outside it only where the server owner allows them in "
                                        "LCMPACK_DISTILL_DATA_ROOTS). Leave empty to use the prompts."),
                io.String.Input("prompts", default="", multiline=True,
                                tooltip="Prompts only mode (one per line), used when data_dir is empty: the teacher "
                                        "samples its own images first. Data-free; the paper trains on real images."),
                io.Int.Input("max_train_steps", default=1000, min=1, max=1_000_000,
                             tooltip="Optimizer steps (the published LCM-LoRAs: a few thousand at batch 12+)."),
                io.Int.Input("train_batch_size", default=16, min=1, max=1024, tooltip="Samples per step."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1e-1, step=1e-5,
                               tooltip="AdamW learning rate of the LoRA."),
                io.Int.Input("lora_rank", default=64, min=1, max=1024, tooltip="LoRA rank (LCM-LoRA: 64)."),
                io.Float.Input("lora_alpha", default=64.0, min=0.01, max=4096.0, tooltip="LoRA alpha."),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=8,
                             tooltip="Training resolution (512 for SD1.x, 1024 for SDXL)."),
                io.Float.Input("w_min", default=-1.0, min=-1.0, max=100.0, step=0.1,
                               tooltip="Lowest guidance w drawn per sample; -1: the script's default (5 SD1.x/2.x, "
                                       "3 SDXL)."),
                io.Float.Input("w_max", default=15.0, min=0.0, max=100.0, step=0.1, tooltip="Highest guidance w."),
                io.Int.Input("num_ddim_timesteps", default=50, min=2, max=1000,
                             tooltip="DDIM solver grid (a divisor of 1000; skip = 1000 / this)."),
                io.Combo.Input("loss_type", options=["huber", "l2"], default="huber",
                               tooltip="Pseudo-Huber (LCM-LoRA) or squared error."),
                io.Float.Input("huber_c", default=0.001, min=1e-6, max=1.0, step=0.0001, tooltip="Pseudo-Huber c."),
                io.Combo.Input("mixed_precision", options=["fp16", "bf16", "no"], default="fp16",
                               tooltip="Autocast precision (LoRA weights stay fp32); 'no' = fp32."),
                io.Boolean.Input("gradient_checkpointing", default=False,
                                 tooltip="Less memory, about 30 % slower."),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Seed of the whole run."),
                io.Int.Input("checkpointing_steps", default=500, min=1, max=1_000_000,
                             tooltip="Save a resumable checkpoint every N steps."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue from the newest checkpoint of this output name (same settings)."),
                io.Boolean.Input("center_crop", default=False, tooltip="Centre crop (default: random crop)."),
                io.Boolean.Input("random_flip", default=False, tooltip="Random horizontal flips."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE; needed for image folders."),
                io.Int.Input("teacher_sampling_steps", default=25, min=1, max=1000, optional=True,
                             tooltip="Prompts only: DDIM steps the teacher takes per image (cfg 7.5)."),
            ],
            outputs=[
                io.String.Output(display_name="lora_name", tooltip="The written file's name in models/loras."),
                io.Image.Output(display_name="loss_curve", tooltip="The training loss per step."),
            ],
            is_output_node=True,
        )

    fingerprint_inputs = classmethod(run_every_time)  # trains and writes a file: runs on every queue

    @classmethod
    def validate_inputs(cls, learning_rate: float | None = None, lora_alpha: float | None = None,
                        w_min: float | None = None, w_max: float | None = None, huber_c: float | None = None,
                        loss_type: str | None = None, mixed_precision: str | None = None) -> bool | str:
        # No **kwargs: with them ComfyUI skips its own checks of every input. NaN/Inf pass core's min/max.
        return check_inputs(cls, learning_rate=learning_rate, lora_alpha=lora_alpha, w_min=w_min, w_max=w_max,
                            huber_c=huber_c, loss_type=loss_type, mixed_precision=mixed_precision)

    @classmethod
    def execute(cls, model, clip, output_name: str, data_dir: str, prompts: str, vae=None, resume: bool = False,
                **options) -> io.NodeOutput:
        if options.get("w_min", -1.0) < 0:
            options["w_min"] = None
        config = DistillConfig(**options)
        config.validate()  # every option finite and in range before the data is read
        if data_dir.strip():
            samples = _image_samples(data_dir)
        elif prompts.strip():
            samples = load_samples(prompts=prompts.splitlines())
        else:
            raise DistillDataError("give training data: an image folder in data_dir, or prompts (one per line).")
        run_dir = _run_folder(output_name)
        bar = comfy.utils.ProgressBar(config.max_train_steps)
        with torch.inference_mode(False):
            result = distill_lcm_lora(
                model, clip, samples, config, folder_paths.get_folder_paths("loras")[0], output_name, vae=vae,
                checkpoint_dir=run_dir, resume_from_checkpoint="latest" if resume else None,
                cache_dir=run_dir / "cache", source_name="ComfyUI model",
                progress=lambda step, total, loss: bar.update_absolute(step, total),
                interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        curve = loss_curve_image(result.losses)
        LOG.info("Distill LCM-LoRA: wrote %s after %d steps", result.path, result.steps)
        return io.NodeOutput(result.path.name, curve, ui=ui.PreviewImage(curve, cls=cls))


NODES = [DistillLCMLoRA]
