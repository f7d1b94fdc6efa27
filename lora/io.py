"""Reading LoRA files safely and turning them into :class:`~lora.types.LoraFile` objects.

* safetensors files are read with ``safetensors`` (no code execution); truncated/corrupt headers are refused.
* pickle-based files (``.ckpt``/``.pt``/``.pth``/``.bin``) are loaded only with ``torch.load(weights_only=True)``,
  which refuses any object that is not a plain tensor container; anything else is refused, never unpickled.
* PEFT alpha comes from the safetensors ``lora_adapter_metadata`` (diffusers ≥ 0.32) or from an
  ``adapter_config.json`` next to the file (see :mod:`lora.formats`).

Public API (used by the loader node and by mixing/export): :func:`read_lora_file`, :func:`read_tensors`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from .detect import detect_family, detect_kind
from .errors import LoraFileError
from .formats import parse_modules
from .types import LoraFile

LOG = logging.getLogger(__name__)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ADAPTER_CONFIG_NAMES = ("{stem}.adapter_config.json", "adapter_config.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted tensor names, dtypes, shapes and bytes (independent of the file header's order)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises SafetensorError / OSError / ValueError variants
        raise LoraFileError(
            f"LoRA file '{path.name}' is not a readable safetensors file ({type(error).__name__}: {error}). "
            "It is probably truncated or corrupt: download it again, and check its size/sha256 against the "
            "published one.") from error
    return tensors, metadata


def _read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise LoraFileError(
            f"LoRA file '{path.name}' is a pickle file that does not load with torch.load(weights_only=True) "
            f"({type(error).__name__}); the pack never unpickles arbitrary objects. Use the safetensors version of "
            "this LoRA, or convert it in a trusted environment.") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise LoraFileError(f"LoRA file '{path.name}' does not hold a flat dict of tensors; use a safetensors LoRA.")
    return {str(k): v for k, v in loaded.items()}, {}


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(tensors, string metadata)`` from a LoRA file, refusing anything unsafe or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file '{path}' does not exist; put it in models/loras and refresh the node.")
    if path.stat().st_size == 0:
        raise LoraFileError(f"LoRA file '{path.name}' is empty (0 bytes): the download failed; download it again.")
    with open(path, "rb") as handle:
        head = handle.read(2)
    is_pickle = path.suffix.lower() in PICKLE_SUFFIXES or head == b"PK" or head[:1] == b"\x80"
    tensors, metadata = _read_pickle(path) if is_pickle else _read_safetensors(path)
    if not tensors:
        raise LoraFileError(f"LoRA file '{path.name}' contains no tensors; download it again or pick another file.")
    return tensors, metadata


def read_adapter_config(path: Path) -> dict | None:
    """The PEFT ``adapter_config.json`` beside ``path`` (``<stem>.adapter_config.json`` first), if any."""
    for pattern in ADAPTER_CONFIG_NAMES:
        candidate = path.with_name(pattern.format(stem=path.stem))
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text()) | {"__file__": candidate.name}
            except (OSError, ValueError) as error:
                raise LoraFileError(f"'{candidate.name}' next to LoRA '{path.name}' is not valid JSON ({error}); "
                                    "fix or remove it.") from error
    return None


def read_lora_file(path: str | os.PathLike, name: str | None = None) -> LoraFile:
    """Read, validate and classify a LoRA file.

    Returns a :class:`LoraFile` whose ``modules`` are keyed by the file's own module names (e.g.
    ``lora_unet_down_blocks_0_attentions_0_proj_in`` or ``unet.down_blocks.0....attn1.to_q``) with alpha
    resolved (``.alpha`` tensors, PEFT metadata/config, else alpha = rank), ``extra`` holding tensors of
    adapters left to ComfyUI core (LoHa/LoKr/DoRA scale), and ``format``/``family``/``kind`` detected.
    Raises a :class:`~lora.errors.LoraError` subclass naming the file and the fix.
    """
    path = Path(path)
    display = name or path.name
    tensors, metadata = read_tensors(path)
    parsed = parse_modules(tensors, metadata, display,
                           adapter_config_loader=lambda: read_adapter_config(path))
    lora = LoraFile(name=display, sha256=_sha256(path), format=parsed.format, family="unknown", kind="style",
                    modules=parsed.modules, extra=parsed.extra, metadata=metadata, notes=list(parsed.notes),
                    path=str(path), content_sha256=content_digest(tensors))
    lora.family, family_note = detect_family(lora)
    lora.kind, kind_note = detect_kind(lora)
    lora.notes += [family_note, kind_note]
    LOG.info("read LoRA %s: format %s, family %s, kind %s, %d modules", display, lora.format, lora.family,
             lora.kind, len(lora.modules))
    return lora
