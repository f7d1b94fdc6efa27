"""ComfyUI as a library for the demo's training and evaluation scripts (no server, no custom nodes).

:func:`prepare` puts ComfyUI (``$COMFYUI_PATH`` or the provisioned ``.comfyui/ComfyUI``) on ``sys.path`` and
sets its command-line arguments before ``comfy.model_management`` is imported: the GPU when there is one,
the CPU otherwise. Inside an already booted ComfyUI (the tests, ``make run``) it changes nothing.

:func:`encode_captions` runs core ``CLIPTextEncode`` -- the node a workflow runs -- on a CLIP-L state dict,
so the UNet is trained on exactly the conditioning a workflow feeds it.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from ..devkit import host

LOG = logging.getLogger(__name__)


def comfyui_root() -> Path:
    """The ComfyUI tree the demo runs on (``$COMFYUI_PATH`` or the provisioned one): the shared host's rule."""
    return host.comfyui_root()


def prepare(cpu: bool | None = None) -> None:
    """Make ``import comfy.*`` work through the shared host (``devkit/host.py``); ``cpu`` None means: the CPU
    only when CUDA is unavailable."""
    if "comfy.model_management" in sys.modules:
        return
    use_cpu = (not torch.cuda.is_available()) if cpu is None else cpu
    host.prepare_import("cpu" if use_cpu else "cuda")


def start_script(out: Path) -> torch.device:
    """What a demo script does first: INFO logging to stdout, its output folder ``out`` made, ComfyUI importable;
    returns the device it trains or samples on (CUDA when there is one)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    out.mkdir(parents=True, exist_ok=True)
    prepare()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def text_encoder(clip_state_dict: dict[str, torch.Tensor], prefix: str = "cond_stage_model.transformer."):
    """A ComfyUI ``CLIP`` object (SD1.5 tokenizer and CLIP-L) from a CLIP-L state dict."""
    prepare()
    import comfy.sd

    plain = {k[len(prefix):]: v for k, v in clip_state_dict.items() if k.startswith(prefix)}
    return comfy.sd.load_text_encoder_state_dicts(state_dicts=[plain], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)


def clip_text_encode(clip, text: str) -> torch.Tensor:
    """What core ``CLIPTextEncode.encode`` hands the sampler for ``text`` (its two lines: tokenize, then
    ``encode_from_tokens_scheduled``): the conditioning tensor ``[1, 77, 768]``."""
    tokens = clip.tokenize(text)
    return clip.encode_from_tokens_scheduled(tokens)[0][0]


@torch.no_grad()
def encode_captions(clip, captions: list[str]) -> torch.Tensor:
    """``[len(captions), 77, 768]`` float32: the ``CLIPTextEncode`` conditioning of each caption."""
    return torch.cat([clip_text_encode(clip, text).float().cpu() for text in captions])

