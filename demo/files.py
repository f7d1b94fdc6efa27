"""The demo family's files: what the repository ships (``models/demo/``) and what set-up assembles.

Shipped (fp16 safetensors, written once by scripts/demo_train.py and scripts/demo_distill.py):

* ``demo_shapes_sd15_unet_vae.safetensors`` -- the teacher UNet (``model.diffusion_model.*``) and the TAESD
  autoencoder (``first_stage_model.*``), i.e. an SD1.5 checkpoint without its text encoder;
* ``demo_shapes_lcm_lora.safetensors`` -- the LCM-LoRA distilled from that teacher by the pack's trainer;
* ``demo_shapes_striped_style.safetensors`` -- the style LoRA (trigger phrase ``striped style``);
* ``demo_shapes_classifier.safetensors`` -- the attribute classifier of the quality numbers;
* ``demo_shapes_controlnet_mask.safetensors`` -- the ControlNet (the shape's mask as control; core's
  Control-LoRA format), written once by scripts/demo_controlnet.py;
* ``demo_shapes_small_finetune_delta.safetensors`` -- the fine-tuned teacher (issue 26) as an int8 delta on
  the teacher (:mod:`.finetune`, written by scripts/demo_finetune.py; not shipped yet);
* ``clip_l_fingerprint.json`` -- the fingerprint of the generated CLIP-L; ``training.json`` and
  ``quality.json`` -- what training and evaluation reported.

Set-up (:func:`install`) writes a ComfyUI ``models`` folder: ``checkpoints/demo_shapes_sd15.safetensors``
(UNet + VAE + the CLIP-L generated from its seed and checked against the fingerprint), the two LoRAs in
``loras/`` and the ControlNet in ``controlnet/``. It is skipped when the files are already there and up to date.
:func:`assemble_finetune` writes the fine-tune's checkpoint the same way (teacher + delta + CLIP-L).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from . import clip_init

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "demo"
UNET_VAE = "demo_shapes_sd15_unet_vae.safetensors"
LCM_LORA = "demo_shapes_lcm_lora.safetensors"
STYLE_LORA = "demo_shapes_striped_style.safetensors"
CLASSIFIER = "demo_shapes_classifier.safetensors"
CONTROLNET = "demo_shapes_controlnet_mask.safetensors"
FINGERPRINT = "clip_l_fingerprint.json"
CHECKPOINT = "demo_shapes_sd15.safetensors"
FINETUNE_DELTA = "demo_shapes_small_finetune_delta.safetensors"
FINETUNE_UNET_VAE = "demo_shapes_sd15_small_unet_vae.safetensors"  # made from the delta, not shipped
FINETUNE_CHECKPOINT = "demo_shapes_sd15_small.safetensors"
ASSEMBLY_VERSION = "1"
LOG = logging.getLogger(__name__)


class DemoFilesError(RuntimeError):
    """A shipped demo file is missing or unreadable; the message says how to get it back."""


def shipped(name: str, folder: Path = SHIPPED) -> Path:
    path = folder / name
    if not path.is_file():
        raise DemoFilesError(f"demo file {path} is missing: it is committed in the repository (git checkout "
                             f"-- models/demo) or re-made by scripts/demo_train.py / scripts/demo_distill.py.")
    return path


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None,
                 dtype: torch.dtype | None = torch.float16) -> Path:
    """Write a safetensors file atomically (floating tensors cast to ``dtype`` unless None), replacing it."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    out = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
           for k, v in tensors.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(out, str(tmp), metadata=metadata or {})
    os.replace(tmp, path)
    return path


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assemble_checkpoint(target: Path, folder: Path = SHIPPED, delta: Path | None = None) -> Path:
    """``target`` = shipped UNet + VAE + the generated CLIP-L (float32, fingerprint-checked); with ``delta``
    (a :mod:`.finetune` delta file) the UNet is the fine-tune rebuilt from it."""
    tensors = load_tensors(shipped(UNET_VAE, folder))
    if delta is not None:
        from .finetune import apply_delta

        tensors = apply_delta(tensors, load_tensors(delta))
    clip = clip_init.clip_l_state_dict()
    clip_init.check_fingerprint(clip, shipped(FINGERPRINT))  # the repository's, wherever the UNet comes from
    tensors.update(clip)
    return save_tensors(tensors, target, {"demo": "lcm-lora-pack demo family, see docs/demo_model_card.md"},
                        dtype=None)


def assemble_finetune(models_root: Path, folder: Path = SHIPPED) -> Path:
    """``checkpoints/demo_shapes_sd15_small.safetensors`` in ``models_root``: the fine-tuned teacher (teacher +
    the shipped delta + CLIP-L), an SD1.5 checkpoint like the teacher's; returns its path."""
    target = models_root / "checkpoints" / FINETUNE_CHECKPOINT
    if not target.is_file():
        assemble_checkpoint(target, folder, delta=shipped(FINETUNE_DELTA, folder))
    return target


def _stamp(models_root: Path) -> Path:
    return models_root / "checkpoints" / f".{CHECKPOINT}.stamp"


def _stamp_text(folder: Path) -> str:
    source = shipped(UNET_VAE, folder)
    return json.dumps({"version": ASSEMBLY_VERSION, "source_size": source.stat().st_size,
                       "source_mtime_ns": source.stat().st_mtime_ns, "clip_seed": clip_init.CLIP_SEED})


def install(models_root: Path, folder: Path = SHIPPED, with_loras: bool = True) -> Path:
    """Put the demo family into a ComfyUI ``models`` folder (``checkpoints/``, ``loras/``, ``controlnet/``);
    returns it.

    The checkpoint is re-assembled only when the shipped UNet/VAE changed; the LoRAs and the ControlNet are
    linked (copied where links are not possible).
    """
    checkpoint = models_root / "checkpoints" / CHECKPOINT
    stamp, expected = _stamp(models_root), _stamp_text(folder)
    if not (checkpoint.is_file() and stamp.is_file() and stamp.read_text() == expected):
        LOG.info("assembling %s (generating CLIP-L from its seed, ~10 s)", checkpoint)
        assemble_checkpoint(checkpoint, folder)
        stamp.write_text(expected)
    if with_loras:
        for name, kind in ((LCM_LORA, "loras"), (STYLE_LORA, "loras"), (CONTROLNET, "controlnet")):
            source = folder / name
            target = models_root / kind / name
            if not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(source.resolve())
            except OSError:
                target.write_bytes(source.read_bytes())
    return models_root


def load_classifier(folder: Path = SHIPPED):
    from .nets import AttributeClassifier

    classifier = AttributeClassifier()
    state = {k: v.float() for k, v in load_tensors(shipped(CLASSIFIER, folder)).items()}
    classifier.load_state_dict(state)
    return classifier.eval()


def caption_embeddings(path: Path | None = None) -> torch.Tensor:
    """The caption table of ``world.all_captions()``: read from ``path`` (``demo_train.py --stages captions``)
    or computed with the generated CLIP-L (fingerprint-checked)."""
    from . import comfy_env, world

    if path is not None:
        return load_tensors(path)["embeddings"].float()
    state = clip_init.clip_l_state_dict()
    clip_init.check_fingerprint(state, shipped(FINGERPRINT))
    return comfy_env.encode_captions(comfy_env.text_encoder(state), world.all_captions())
