"""Safe writing of safetensors files: validated names, no silent overwrite, atomic replace.

The file is written by ``safetensors.torch.save_file`` to a temporary file in the destination folder and
fsync'ed, then given the final name: by a hard link when overwriting is not allowed (fails if the name exists,
so a file created meanwhile is never replaced), else by ``os.replace`` (atomic on POSIX and Windows within one
filesystem); the folder is fsync'ed so the new name survives a crash. Any failure removes the temporary file,
so a crash or a full disk never leaves a half-written LoRA that ComfyUI would list.
"""
from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ExportPathError, LoraTensorError

LOG = logging.getLogger(__name__)

SUFFIX = ".safetensors"
NAME_MAX = 255  # bytes of one file name on ext4/XFS/btrfs/APFS (NTFS: 255 UTF-16 units), suffix included
TEMP_STEM_MAX = 200  # bytes of the name kept in the temporary file's name (it adds ~14 bytes of its own)
_FORBIDDEN = set('<>:"|?*\0')


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
    size = len(cleaned.encode("utf-8"))
    if size > NAME_MAX:
        raise ExportPathError(f"export filename {cleaned[:40]!r}… is {size} bytes with '{SUFFIX}', but file names "
                              f"are limited to {NAME_MAX} bytes (UTF-8, suffix included); shorten it by "
                              f"{size - NAME_MAX} bytes.")
    return cleaned


def _temp_stem(target: Path) -> str:
    """The target's stem cut to :data:`TEMP_STEM_MAX` UTF-8 bytes (whole characters), for the temporary name."""
    return target.stem.encode("utf-8")[:TEMP_STEM_MAX].decode("utf-8", errors="ignore")


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ExportPathError(f"export folder {folder} does not exist; create it or check ComfyUI's "
                              "models/loras path (extra_model_paths.yaml).")
    mode = folder.stat().st_mode
    if not os.access(folder, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise ExportPathError(f"export folder {folder} is read-only (mode {stat.filemode(mode)}); make it "
                              "writable or choose another LoRA folder.")


def check_target(folder: Path, target: Path, overwrite: bool) -> None:
    """The folder exists and is writable; ``target`` is free (or may be overwritten, and is not a folder)."""
    _check_folder(folder)
    if target.is_dir():
        raise ExportPathError(f"{target.name} in {folder} is a folder, not a file; choose another filename or "
                              "move that folder away.")
    if target.exists() and not overwrite:
        raise _exists_error(target)


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], folder: Path | str,
                            name: str, overwrite: bool = False) -> Path:
    """Write ``tensors`` with ``metadata`` (str → str) as ``folder/name`` atomically; returns the final path.

    Refuses an existing file unless ``overwrite``; refuses read-only folders; never leaves a partial file.
    """
    folder = Path(folder)
    target = folder / export_file_name(name)
    check_target(folder, target, overwrite)
    bad_meta = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad_meta:
        raise TypeError(f"safetensors metadata values must be str; not str: {bad_meta}")
    _check_finite(tensors, target.name)
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{_temp_stem(target)}.", suffix=".tmp", dir=folder)
    except OSError as error:
        raise ExportPathError(f"cannot create a file in {folder}: {error}; check permissions and free space.") \
            from error
    temp = Path(temp_name)
    try:
        os.close(handle)
        # Straight from the tensors' memory into the file (no whole-file bytes object in between).
        save_file({k: v.contiguous() for k, v in tensors.items()}, temp, metadata=dict(metadata))
        _fsync_file(temp)
        _publish(temp, target, overwrite)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    LOG.info("wrote %s (%d tensors, %d bytes)", target, len(tensors), target.stat().st_size)
    return target


def _check_finite(tensors: Mapping[str, torch.Tensor], name: str) -> None:
    """Refuse to write NaN/Inf: a LoRA file holding them gives NaN images wherever it is loaded."""
    bad = [key for key, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise LoraTensorError(f"{name} was not written: {len(bad)} tensors hold NaN/Inf, e.g. {bad[:3]}. The mix "
                              "overflowed (a source LoRA's alpha or weight too large, or beyond the save_dtype's "
                              "range: fp16 ends at 65504); fix that LoRA, lower its weight, or save as bf16/fp32.")


def _exists_error(target: Path) -> ExportPathError:
    return ExportPathError(f"{target.name} already exists in {target.parent}; choose another filename or set "
                           "overwrite to true.")


def _fsync_file(path: Path) -> None:
    """Flush the written bytes to disk *before* the rename: otherwise a crash shortly after the rename can leave
    the final name pointing at an empty or partial file (delayed allocation on ext4/XFS)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temp: Path, target: Path, overwrite: bool) -> None:
    """Give the complete temporary file its final name. Without ``overwrite`` a hard link is made, which fails
    atomically if the name appeared since the check (no silent overwrite even then); filesystems without
    hard links fall back to check + rename."""
    if not overwrite:
        try:
            os.link(temp, target)
        except FileExistsError:
            raise _exists_error(target) from None
        except OSError:
            if target.exists():
                raise _exists_error(target) from None
        else:
            temp.unlink()
            return
    os.replace(temp, target)


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
