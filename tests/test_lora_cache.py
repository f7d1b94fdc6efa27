"""The parsed-LoRA cache of ``lora.io``: a re-read skips parsing, a changed file is read again, the bound
holds, bad files are refused every time, and callers cannot alter what the cache holds."""
from __future__ import annotations

import os

import pytest
import torch
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.lora import io as lora_io
from lcm_lora_pack.lora.errors import LoraFileError, LoraTensorError


@pytest.fixture
def parses(monkeypatch):
    """Empty cache, and a list that grows by one path per real parse (``read_tensors`` call)."""
    seen: list[str] = []
    real = lora_io.read_tensors

    def counting(path):
        seen.append(str(path))
        return real(path)

    lora_io.clear_cache()
    monkeypatch.setattr(lora_io, "read_tensors", counting)
    yield seen
    lora_io.clear_cache()


def _same(first, second) -> bool:
    return (first.sha256, first.content_sha256, first.kind, first.family, first.notes) == \
        (second.sha256, second.content_sha256, second.kind, second.family, second.notes) and \
        first.modules.keys() == second.modules.keys() and \
        all(torch.equal(first.modules[k].up, second.modules[k].up) for k in first.modules)


def test_second_read_is_not_parsed_and_equal(tmp_path, parses):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "style.safetensors", rank=4)
    first = lora_io.read_lora_file(path)
    second = lora_io.read_lora_file(path)
    assert parses == [str(path)] and _same(first, second)
    second.modules.clear()
    second.notes.append("caller's note")
    third = lora_io.read_lora_file(path)
    assert len(parses) == 1 and _same(first, third) and third.modules


def test_display_name_is_part_of_the_key(tmp_path, parses):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "x.safetensors", rank=2)
    assert lora_io.read_lora_file(path, name="a").name == "a"
    assert lora_io.read_lora_file(path, name="b").name == "b"
    assert len(parses) == 2


@pytest.mark.parametrize("rewrite", ["other rank, in place", "same size, atomic replace"])
def test_rewritten_file_is_read_again(tmp_path, parses, rewrite):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "style.safetensors", rank=4, seed=0)
    before = lora_io.read_lora_file(path)
    if rewrite.startswith("other rank"):
        loras.make_kohya_lora(SD15_UNET_CONFIG, path, rank=2, seed=1)
    else:
        loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "new.safetensors", rank=4, seed=1)
        os.replace(tmp_path / "new.safetensors", path)
    after = lora_io.read_lora_file(path)
    assert len(parses) == 2
    assert after.sha256 != before.sha256 and after.content_sha256 != before.content_sha256
    module = next(iter(after.modules))
    assert not torch.equal(after.modules[module].down, before.modules[module].down)


def test_cache_bound_is_respected(tmp_path, parses, monkeypatch):
    monkeypatch.setattr(lora_io, "CACHE_SIZE", 2)
    paths = [loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / f"l{i}.safetensors", rank=2, seed=i)
             for i in range(3)]
    for path in paths:
        lora_io.read_lora_file(path)
    assert lora_io.cached_count() == 2
    lora_io.read_lora_file(paths[2])
    assert len(parses) == 3
    lora_io.read_lora_file(paths[0])  # the oldest was dropped
    assert len(parses) == 4 and lora_io.cached_count() == 2
    lora_io.set_cache_size(0)
    assert lora_io.cached_count() == 0
    lora_io.read_lora_file(paths[0])
    assert len(parses) == 5 and lora_io.cached_count() == 0


def test_bad_cache_size_is_refused():
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        lora_io.set_cache_size(-1)


def test_corrupt_file_replacing_a_good_one_is_refused(tmp_path, parses):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "style.safetensors", rank=4)
    lora_io.read_lora_file(path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    for _ in range(2):
        with pytest.raises(LoraFileError, match="truncated or corrupt"):
            lora_io.read_lora_file(path)
    tensors = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4)
    name = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    loras.save_lora(tensors, tmp_path / "nan.safetensors")
    os.replace(tmp_path / "nan.safetensors", path)
    with pytest.raises(LoraTensorError):
        lora_io.read_lora_file(path)
    assert lora_io.cached_count() == 0


def test_changed_adapter_config_is_read_again(tmp_path, parses):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "style.safetensors", rank=4)
    lora_io.read_lora_file(path)
    (tmp_path / "adapter_config.json").write_text("{}")
    lora_io.read_lora_file(path)
    assert len(parses) == 2
