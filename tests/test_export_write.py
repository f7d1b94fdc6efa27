"""Safe writing (lora.safe_write): names, no silent overwrite, read-only folders, atomic (nothing partial)."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from lcm_lora_pack.lora import safe_write
from lcm_lora_pack.lora.safe_write import ExportPathError, atomic_save_safetensors, export_file_name
from safetensors import safe_open

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


def test_a_file_appearing_during_the_write_is_not_overwritten(tmp_path, monkeypatch):
    """The existence check runs before the (long) write; a file created by someone else meanwhile must survive:
    the final name is taken with a hard link, which fails if the name exists."""
    original = safe_write.save_file

    def racing_save_file(tensors, path, metadata=None):
        (tmp_path / "mix.safetensors").write_bytes(b"theirs")
        original(tensors, path, metadata=metadata)

    monkeypatch.setattr(safe_write, "save_file", racing_save_file)
    with pytest.raises(ExportPathError, match="already exists"):
        atomic_save_safetensors(TENSORS, {}, tmp_path, "mix")
    assert (tmp_path / "mix.safetensors").read_bytes() == b"theirs"
    assert sorted(os.listdir(tmp_path)) == ["mix.safetensors"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    """Durability: the temporary file's data is fsync'ed before it gets the final name, the folder after."""
    events = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def link(source, destination):
        events.append("link")
        real_link(source, destination)

    monkeypatch.setattr(safe_write.os, "fsync", fsync)
    monkeypatch.setattr(safe_write.os, "link", link)
    atomic_save_safetensors(TENSORS, {}, tmp_path, "mix")
    assert events == ["fsync-file", "link", "fsync-dir"]
    assert sorted(os.listdir(tmp_path)) == ["mix.safetensors"]
