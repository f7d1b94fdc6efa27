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

from .detect import detect_family, detect_kind, narrow_family
from .errors import LoraFileError
from .formats import parse_modules
from .kinds import STYLE, is_accelerator
from .metadata import bounded_fields, read_pack_metadata
from .types import LoraFile

LOG = logging.getLogger(__name__)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
ADAPTER_CONFIG_NAMES = ("{stem}.adapter_config.json", "adapter_config.json")
CACHE_SIZE = 4
SAFETENSORS_MIN_SIZE = 10  # 8-byte length + "{}"
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses larger headers

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
        with open(path, "rb") as handle:  # a handle, not the path: newer torch picks a loader by the suffix
            loaded = torch.load(handle, map_location="cpu", weights_only=True)
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


def _safetensors_header_problem(path: Path, size: int) -> str | None:
    """Why ``path`` is not a safetensors file (None: its header parses), from the format itself: an 8-byte
    little-endian header length n with 8 + n <= file size, then n bytes of UTF-8 JSON holding an object."""
    if size < SAFETENSORS_MIN_SIZE:
        return f"{size} bytes is too short for a safetensors header"
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > min(size - 8, SAFETENSORS_MAX_HEADER):
            return f"its header length {length} does not fit a {size}-byte file"
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "its header is not JSON"
    return None if isinstance(header, dict) else "its header is not a JSON object"


def _is_torch_pickle(path: Path) -> bool:
    """A torch zip archive (``torch.save``'s default) or a pickle of protocol 2..5 (the legacy format)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head == b"PK\x03\x04" or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read ``(tensors, string metadata)`` from a LoRA file, refusing anything unsafe or unreadable.

    The format is decided by parsing, never by a suffix or one byte: a file whose safetensors header parses
    is safetensors (its first byte is the low byte of the header length, so it may well be 0x80, the pickle
    protocol opcode); only a file that is not, and really is a torch zip archive or pickle (or carries a
    pickle suffix), goes to ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraFileError(f"LoRA file '{path}' does not exist; put it in models/loras and refresh the node.")
    size = path.stat().st_size
    if size == 0:
        raise LoraFileError(f"LoRA file '{path.name}' is empty (0 bytes): the download failed; download it again.")
    problem = _safetensors_header_problem(path, size)
    if problem is not None and (_is_torch_pickle(path) or path.suffix.lower() in PICKLE_SUFFIXES):
        tensors, metadata = _read_pickle(path)
    else:
        tensors, metadata = _read_safetensors(path)
    if not tensors:
        raise LoraFileError(f"LoRA file '{path.name}' contains no tensors; download it again or pick another file.")
    return tensors, metadata


ADAPTER_CONFIG_LIMIT = 1024 * 1024  # bytes of an adapter_config.json read (PEFT writes a few KiB)


def read_adapter_config(path: Path) -> dict | None:
    """The PEFT ``adapter_config.json`` beside ``path`` (``<stem>.adapter_config.json`` first), if any."""
    for pattern in ADAPTER_CONFIG_NAMES:
        candidate = path.with_name(pattern.format(stem=path.stem))
        if candidate.is_file():
            if candidate.stat().st_size > ADAPTER_CONFIG_LIMIT:
                raise LoraFileError(f"'{candidate.name}' next to LoRA '{path.name}' is larger than "
                                    f"{ADAPTER_CONFIG_LIMIT // 1024} KiB, too big for a PEFT adapter config; fix or "
                                    "remove it.")
            try:
                config = json.loads(candidate.read_text())
            except (OSError, ValueError, RecursionError) as error:
                raise LoraFileError(f"'{candidate.name}' next to LoRA '{path.name}' is not valid JSON ({error}); "
                                    "fix or remove it.") from error
            if not isinstance(config, dict):
                raise LoraFileError(f"'{candidate.name}' next to LoRA '{path.name}' holds JSON "
                                    f"{type(config).__name__}, not a PEFT adapter config object; fix or remove it.")
            return config | {"__file__": candidate.name}
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
    tensors, raw_metadata = read_tensors(path)
    metadata, metadata_notes = bounded_fields(raw_metadata)
    parsed = parse_modules(tensors, metadata, display,
                           adapter_config_loader=lambda: read_adapter_config(path))
    lora = LoraFile(name=display, sha256=_sha256(path), format=parsed.format, family="unknown", kind="style",
                    modules=parsed.modules, extra=parsed.extra, metadata=metadata, notes=list(parsed.notes),
                    path=str(path), content_sha256=content_digest(tensors))
    lora.family, family_note = detect_family(lora)
    lora.kind, kind_note = detect_kind(lora)
    lora.family, narrowed = narrow_family(lora.family, lora.kind)
    family_note = narrowed or family_note
    lora.notes += [*metadata_notes, *read_pack_metadata(metadata, is_accelerator, STYLE).notes, family_note,
                   kind_note]
    LOG.info("read LoRA %s: format %s, family %s, kind %s, %d modules", display, lora.format, lora.family,
             lora.kind, len(lora.modules))
    return lora
