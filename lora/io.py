"""Reading LoRA files safely and turning them into :class:`~lora.types.LoraFile` objects.

* safetensors files are read with ``safetensors`` (no code execution); truncated/corrupt headers are refused.
* pickle-based files (``.ckpt``/``.pt``/``.pth``/``.bin``) are loaded only with ``torch.load(weights_only=True)``,
  which refuses any object that is not a plain tensor container; anything else is refused, never unpickled.
* PEFT alpha comes from the safetensors ``lora_adapter_metadata`` (diffusers ≥ 0.32) or from an
  ``adapter_config.json`` next to the file (see :mod:`lora.formats`).

Public API (used by the loader node and by mixing/export): :func:`read_lora_file`, :func:`read_tensors`.

Parsed files are kept in a small LRU cache (:data:`CACHE_SIZE` entries, default 4), as core's ``LoraLoader``
keeps its last file: re-applying a LoRA skips reading, hashing and validating it again (~350 ms for a 394 MB
SDXL LCM-LoRA). The key is the file's real path, device, inode, size, ``st_mtime_ns`` and ``st_ctime_ns``
plus the same stat of a PEFT ``adapter_config.json`` beside it, so a changed or replaced file is read and
validated again. The cache holds the tensors of up to :data:`CACHE_SIZE` files in CPU memory (4 SDXL
LCM-LoRAs ≈ 1.6 GB; :func:`set_cache_size` changes the bound, 0 turns the cache off). Cached tensors and
modules are shared and must be treated as read-only; every call returns a fresh :class:`LoraFile` with
fresh containers (modules/extra/metadata/notes), so callers may rebind or filter those freely.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import torch

from .detect import detect_family, detect_kind
from .errors import LoraFileError
from .formats import parse_modules
from .types import LoraFile

LOG = logging.getLogger(__name__)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ADAPTER_CONFIG_NAMES = ("{stem}.adapter_config.json", "adapter_config.json")
CACHE_SIZE = 4

_CACHE: OrderedDict[tuple, LoraFile] = OrderedDict()
_CACHE_LOCK = threading.Lock()


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
        head = handle.read(9)
    # A safetensors file starts with its header length (u64, little-endian) and then '{': its first byte may be
    # 0x80 (a header of 128 + 256·k bytes), which must not be taken for a pickle's protocol byte.
    safetensors_layout = len(head) == 9 and head[8:9] == b"{"
    is_pickle = path.suffix.lower() in PICKLE_SUFFIXES or (not safetensors_layout and (head[:2] == b"PK"
                                                                                       or head[:1] == b"\x80"))
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


def _stat_key(path: Path) -> tuple | None:
    """What identifies one version of a file: real path, device, inode, size, mtime and ctime (ns)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _cache_key(path: Path, display: str) -> tuple | None:
    """Cache key of ``path`` (None: not cacheable, e.g. missing), including its PEFT adapter configs."""
    own = _stat_key(path)
    if own is None:
        return None
    configs = tuple(_stat_key(path.with_name(pattern.format(stem=path.stem))) for pattern in ADAPTER_CONFIG_NAMES)
    return own, configs, display


def _fresh_copy(lora: LoraFile) -> LoraFile:
    """A new :class:`LoraFile` sharing the (read-only) tensors and modules but not the containers."""
    return replace(lora, modules=dict(lora.modules), extra=dict(lora.extra), metadata=dict(lora.metadata),
                   notes=list(lora.notes))


def _forget_other_versions(file_key: tuple) -> None:
    """Drop cached older versions of this file (it changed: only its new version is worth keeping)."""
    with _CACHE_LOCK:
        for old in [k for k in _CACHE if k[0][0] == file_key[0] and k[0] != file_key]:
            del _CACHE[old]


def set_cache_size(size: int) -> None:
    """Bound the parsed-file cache to ``size`` files (0 disables it); extra entries are dropped, oldest first."""
    global CACHE_SIZE  # noqa: PLW0603 (module setting)
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"LoRA cache size {size!r} must be an integer >= 0 (4 is the default).")
    with _CACHE_LOCK:
        CACHE_SIZE = size
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


def clear_cache() -> None:
    """Forget every parsed file."""
    with _CACHE_LOCK:
        _CACHE.clear()


def cached_count() -> int:
    """How many parsed files the cache holds now."""
    with _CACHE_LOCK:
        return len(_CACHE)


def read_lora_file(path: str | os.PathLike, name: str | None = None) -> LoraFile:
    """Read, validate and classify a LoRA file (through the parsed-file cache; see the module docstring).

    Returns a :class:`LoraFile` whose ``modules`` are keyed by the file's own module names (e.g.
    ``lora_unet_down_blocks_0_attentions_0_proj_in`` or ``unet.down_blocks.0....attn1.to_q``) with alpha
    resolved (``.alpha`` tensors, PEFT metadata/config, else alpha = rank), ``extra`` holding tensors of
    adapters left to ComfyUI core (LoHa/LoKr/DoRA scale), and ``format``/``family``/``kind`` detected.
    Raises a :class:`~lora.errors.LoraError` subclass naming the file and the fix; failures are never cached,
    so a bad file is refused every time.
    """
    path = Path(path)
    display = name or path.name
    key = _cache_key(path, display)
    if key is not None:
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is not None:
                _CACHE.move_to_end(key)
        if cached is not None:
            LOG.debug("LoRA %s from the parsed-file cache", display)
            return _fresh_copy(cached)
        _forget_other_versions(key[0])
    lora = parse_lora_file(path, display)
    if key is not None and key == _cache_key(path, display):  # unchanged while it was read
        with _CACHE_LOCK:
            _CACHE[key] = lora
            _CACHE.move_to_end(key)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return _fresh_copy(lora)


def parse_lora_file(path: Path, display: str) -> LoraFile:
    """Read, hash, validate and classify ``path`` without the cache (what :func:`read_lora_file` caches)."""
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
