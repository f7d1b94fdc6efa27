"""``distill_lcm_lora``: the trainer as one Python call on a ComfyUI model + CLIP (+ VAE for image data)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from . import checkpoints, comfy_bridge
from .config import DistillConfig
from .data import Sample, read_prompts_file, scan_image_folder
from .dataset import encode_dataset
from .errors import DistillCheckpointError, DistillConfigError, DistillDataError
from .lora_layers import DEFAULT_TARGETS, matches_target, select_targets
from .output import check_output_name, lora_metadata, write_lora
from .trainer import DistillResult, Trainer, _world

LOG = logging.getLogger(__name__)


def load_samples(data_dir: str | Path | None = None, prompts_file: str | Path | None = None,
                 prompts: list[str] | None = None) -> list[Sample]:
    """Exactly one source: an image folder with captions, a prompts file, or a list of prompts."""
    given = [x is not None for x in (data_dir, prompts_file, prompts)]
    if sum(given) != 1:
        raise DistillDataError("give exactly one data source: an image folder (data_dir) or prompts "
                               f"(prompts_file / prompts); got {sum(given)}.")
    if data_dir is not None:
        return scan_image_folder(data_dir)
    if prompts_file is not None:
        return read_prompts_file(prompts_file)
    cleaned = [p.strip() for p in prompts if p.strip()]
    if not cleaned:
        raise DistillDataError("the prompt list is empty; give at least one prompt.")
    return [Sample(caption=p) for p in cleaned]


def _check_targets(info, targets: tuple[str, ...]) -> None:
    """Every ``lora_target_modules`` entry outside the reference list names a Linear/Conv2d module of the UNet
    (the reference list's entries may be absent, e.g. ``downsamplers.0.conv`` in a one-level UNet), and the
    list selects at least one module."""
    found = select_targets(info.diffusion_model, info.name_map, targets)
    unknown = [t for t in targets if not any(matches_target(name, (t,)) for name in found)
               and (t not in DEFAULT_TARGETS or not found)]
    if unknown:
        raise DistillConfigError(f"lora_target_modules {unknown} match no Linear/Conv2d module of this {info.family} "
                                 f"UNet; use diffusers module names such as {', '.join(DEFAULT_TARGETS[:6])} (the "
                                 "default list).")


def _resume(trainer: Trainer, path: Path, state: dict) -> None:
    """Load a checkpoint's state; one from another LoRA shape or an older format is refused by name."""
    try:
        trainer.load(state)
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise DistillCheckpointError(f"checkpoint {path.name} does not fit this run ({type(error).__name__}: "
                                     "other LoRA modules, rank or optimizer state); resume with the settings it was "
                                     "made with, or delete it to start anew.") from error


def _train(trainer: Trainer, config: DistillConfig, progress, interrupt) -> tuple:
    """Run the loop; ``(before, after)`` validation losses (None without validation). The LoRA lives on the
    training clone as weight functions; nothing is attached to the user's model, so nothing needs undoing."""
    before = trainer.validation_loss(config.validation_draws) if config.validation_draws else None
    trainer.run(progress=progress, interrupt=interrupt)
    after = trainer.validation_loss(config.validation_draws) if config.validation_draws else None
    return before, after


def distill_lcm_lora(model, clip, samples: list[Sample], config: DistillConfig, loras_dir: str | Path,
                     output_name: str, *, vae=None, checkpoint_dir: str | Path | None = None,
                     resume_from_checkpoint: str | None = None, cache_dir: str | Path | None = None,
                     source_name: str = "", overwrite: bool = False, private_copy: bool = True,
                     progress: Callable[[int, int, float], None] | None = None,
                     interrupt: Callable[[], None] | None = None) -> DistillResult:
    """Distil an LCM-LoRA from the ComfyUI ``model`` (teacher) and write it to ``loras_dir/output_name``.

    Nothing is written to ``loras_dir`` unless training finishes; checkpoints go to ``checkpoint_dir`` every
    ``config.checkpointing_steps`` steps. Under ``torchrun`` only rank 0 writes files. ``model`` is never changed:
    training runs on a clone (:func:`comfy_bridge.training_model`; ``private_copy=False`` where nothing else uses
    ``model``, as in the CLI: no second copy of the model).
    """
    rank, world = _world()
    info = comfy_bridge.inspect_model(model)
    config.world_size = world
    config = config.resolved(info.family)
    target = check_output_name(loras_dir, output_name, overwrite)
    if samples and samples[0].image is not None and vae is None:
        raise DistillConfigError("image data needs the VAE to encode the images; connect a VAE (or use prompts).")
    _check_targets(info, config.lora_target_modules)
    with torch.inference_mode(False):
        clone = comfy_bridge.training_model(model, private_copy)  # the user's model: read, never changed
        device = comfy_bridge.load_for_training(clone)
        runner = comfy_bridge.UNetRunner(clone, config.mixed_precision, device)

        def runner_factory():
            runner.load()
            return runner
        data = encode_dataset(samples, info, clip, vae, config, device, runner_factory, cache_dir).cloned()
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
        trainer = Trainer(info, data, config, runner, folder)
        if resume_from_checkpoint:
            path = checkpoints.resolve_checkpoint(resume_from_checkpoint, folder or Path("."))
            if path is not None:
                _resume(trainer, path, checkpoints.load_checkpoint(path, config.fingerprint(), data.fingerprint))
                LOG.info("resumed from %s at step %d", path, trainer.step)
        before, after = _train(trainer, config, progress, interrupt)
    written = None
    if rank == 0:
        metadata = lora_metadata(family=info.family, prediction=info.prediction, config=config, steps=trainer.step,
                                 losses=trainer.losses, data_fingerprint=data.fingerprint, data_mode=data.mode,
                                 samples=len(data), source=source_name, modules=len(trainer.lora.adapters))
        if before is not None:
            metadata["lcmpack.distill.validation_loss"] = json.dumps({"before": before, "after": after})
        written = write_lora(trainer.lora, loras_dir, target.name, metadata, config.save_dtype, overwrite)
    validation = (before, after) if before is not None else None
    return DistillResult(path=written, steps=trainer.step, losses=trainer.losses, lora=trainer.lora,
                         validation=validation)
