"""Safe writing (lora.safe_write): names, no silent overwrite, read-only folders, atomic (nothing partial)."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors import safe_open

from lora import safe_write
from lora.safe_write import ExportPathError, atomic_save_safetensors, export_file_name

TENSORS = {"x.lora_down.weight": torch.ones(2, 3), "x.alpha": torch.tensor(2.0)}


def test_name_gets_suffix_and_bad_names_are_refused():
    assert export_file_name("mix") == "mix.safetensors"
    assert export_file_name("mix.safetensors") == "mix.safetensors"
    for bad in ("../mix", "a/b", "a\\b", "..", "", "  ", ".hidden", "a..b", "x\0y"):
        with pytest.raises(ExportPathError):
            export_file_name(bad)


def test_write_round_trips_tensors_and_metadata(tmp_path):
    path = atomic_save_safetensors(TENSORS, {"lcmpack.mode": "concat"}, tmp_path, "mix")
    assert path == tmp_path / "mix.safetensors"
    with safe_open(path, "pt") as handle:
        assert handle.metadata() == {"lcmpack.mode": "concat"}
        assert torch.equal(handle.get_tensor("x.lora_down.weight"), TENSORS["x.lora_down.weight"])
    assert sorted(os.listdir(tmp_path)) == ["mix.safetensors"]


def test_existing_file_is_not_overwritten_unless_asked(tmp_path):
    (tmp_path / "mix.safetensors").write_bytes(b"keep")
    with pytest.raises(ExportPathError, match="already exists"):
        atomic_save_safetensors(TENSORS, {}, tmp_path, "mix")
    assert (tmp_path / "mix.safetensors").read_bytes() == b"keep"
    atomic_save_safetensors(TENSORS, {}, tmp_path, "mix", overwrite=True)
    assert (tmp_path / "mix.safetensors").read_bytes() != b"keep"


def test_read_only_or_missing_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ExportPathError, match="read-only"):
            atomic_save_safetensors(TENSORS, {}, locked, "mix")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []
    with pytest.raises(ExportPathError, match="does not exist"):
        atomic_save_safetensors(TENSORS, {}, tmp_path / "nope", "mix")


def test_failure_during_write_leaves_nothing(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_write.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_save_safetensors(TENSORS, {}, tmp_path, "mix")
    assert list(tmp_path.iterdir()) == []


def test_non_string_metadata_is_refused(tmp_path):
    with pytest.raises(TypeError, match="must be str"):
        atomic_save_safetensors(TENSORS, {"rank": 4}, tmp_path, "mix")
    assert list(tmp_path.iterdir()) == []
