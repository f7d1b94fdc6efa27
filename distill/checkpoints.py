"""Training checkpoints: ``checkpoint-<step>.pt`` files written atomically, read with ``weights_only=True``.

A checkpoint holds the LoRA, the optimizer, LR-scheduler and grad-scaler states, the step, the loss history and
the run's fingerprints (recipe hyper-parameters, data). It is written to a temporary file, fsync'ed, then
renamed, so an interrupt or a crash never leaves a half-written checkpoint; older ones beyond
``checkpoints_total_limit`` are removed after the new one exists.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import torch

from .errors import DistillCheckpointError

LOG = logging.getLogger(__name__)
PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")
REQUIRED_KEYS = frozenset({"lora", "optimizer", "scheduler", "scaler", "step", "losses", "config_fingerprint",
                           "data_fingerprint"})


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found)


def save_checkpoint(folder: Path, step: int, state: dict, total_limit: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"checkpoint-{step}.pt"
    handle, temp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        torch.save(state, temp)
        fd = os.open(temp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if total_limit is not None:
        for _, old in list_checkpoints(folder)[:-total_limit]:
            old.unlink(missing_ok=True)
    LOG.info("saved checkpoint %s", target)
    return target


def resolve_checkpoint(resume: str, folder: Path) -> Path | None:
    """``latest`` → newest checkpoint in ``folder`` (None if there is none); else the given file."""
    if resume == "latest":
        found = list_checkpoints(folder)
        return found[-1][1] if found else None
    path = Path(resume)
    if not path.is_absolute() and not path.exists():
        path = folder / resume
    if not path.is_file():
        raise DistillCheckpointError(f"checkpoint {resume} does not exist (looked in {folder}); give a "
                                     "checkpoint-<step>.pt file or 'latest'.")
    return path


def load_checkpoint(path: Path, config_fingerprint: str, data_fingerprint: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling/IO failure means the file cannot be used
        # torch's own text is not shown: it carries ANSI escapes and advice (weights_only=False) never to follow
        # for a file of unknown origin.
        raise DistillCheckpointError(f"checkpoint {path.name} in {path.parent} cannot be read "
                                     f"({type(error).__name__}: not a complete checkpoint this trainer wrote); "
                                     "delete it, or resume from another one.") from error
    if not isinstance(state, dict) or not REQUIRED_KEYS <= state.keys():
        missing = sorted(REQUIRED_KEYS - state.keys()) if isinstance(state, dict) else sorted(REQUIRED_KEYS)
        raise DistillCheckpointError(f"checkpoint {path.name} in {path.parent} is incomplete (missing "
                                     f"{', '.join(missing)}); delete it, or resume from another one.")
    for key, expected in (("config_fingerprint", config_fingerprint), ("data_fingerprint", data_fingerprint)):
        if state.get(key) != expected:
            what = "hyper-parameters" if key == "config_fingerprint" else "training data"
            raise DistillCheckpointError(f"checkpoint {path.name} was made with other {what} ({state.get(key)} ≠ "
                                         f"{expected}); resume with the same settings and data, or start a new run.")
    return state
