"""Safe writing of safetensors files: validated names, no silent overwrite, atomic replace.

The file is written to a temporary file in the destination folder, flushed and fsync'ed, then moved over the
final name with ``os.replace`` (atomic on POSIX and Windows within one filesystem). Any failure removes the
temporary file, so a crash or a full disk never leaves a half-written LoRA that ComfyUI would list.
"""
from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save

LOG = logging.getLogger(__name__)

SUFFIX = ".safetensors"
_FORBIDDEN = set('<>:"|?*\0')


class ExportPathError(ValueError):
    """An export name or folder that cannot be written safely; the message says what to change."""


def export_file_name(name: str) -> str:
    """Validate a user-given file name: a plain name, no folders, no ``..``; ``.safetensors`` appended."""
    cleaned = (name or "").strip()
    if not cleaned:
        raise ExportPathError("the export filename is empty; type a name such as 'lcm_style_mix'.")
    if "/" in cleaned or "\\" in cleaned or os.sep in cleaned or (os.altsep and os.altsep in cleaned):
        raise ExportPathError(f"export filename {name!r} contains a path separator; give a plain file name — "
                              "the file is always written into models/loras.")
    if ".." in cleaned or cleaned.startswith("."):
        raise ExportPathError(f"export filename {name!r} contains '..' or starts with '.'; give a plain name.")
    bad = sorted(ch for ch in set(cleaned) if ch in _FORBIDDEN or ord(ch) < 32)
    if bad:
        raise ExportPathError(f"export filename {name!r} contains characters not allowed in file names: {bad!r}.")
    if not cleaned.lower().endswith(SUFFIX):
        cleaned += SUFFIX
    return cleaned


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ExportPathError(f"export folder {folder} does not exist; create it or check ComfyUI's "
                              "models/loras path (extra_model_paths.yaml).")
    mode = folder.stat().st_mode
    if not os.access(folder, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise ExportPathError(f"export folder {folder} is read-only (mode {stat.filemode(mode)}); make it "
                              "writable or choose another LoRA folder.")


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], folder: Path | str,
                            name: str, overwrite: bool = False) -> Path:
    """Write ``tensors`` with ``metadata`` (str → str) as ``folder/name`` atomically; returns the final path.

    Refuses an existing file unless ``overwrite``; refuses read-only folders; never leaves a partial file.
    """
    folder = Path(folder)
    target = folder / export_file_name(name)
    _check_folder(folder)
    if target.exists() and not overwrite:
        raise ExportPathError(f"{target.name} already exists in {folder}; choose another filename or set "
                              "overwrite to true.")
    bad_meta = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad_meta:
        raise TypeError(f"safetensors metadata values must be str; not str: {bad_meta}")
    payload = save({k: v.contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise ExportPathError(f"cannot create a file in {folder}: {error}; check permissions and free space.") \
            from error
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    LOG.info("wrote %s (%d tensors, %d bytes)", target, len(tensors), len(payload))
    return target


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows opening a directory (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
