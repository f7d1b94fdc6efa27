"""The validating metadata reader (lora/metadata.py; issue 22 items 4 and 5) and what it changes for loading.

Malformed ``lcmpack.sources`` and ``lcmpack.kind`` are ignored with a report line, never an exception; known kinds
match case-insensitively; an unknown kind leaves detection to the file name and content. The fuzz of the reader
is tests/test_fuzz_metadata.py.
"""
from __future__ import annotations

import json

import pytest
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.lora import kinds
from lcm_lora_pack.lora.detect import detect_kind
from lcm_lora_pack.lora.io import read_lora_file
from lcm_lora_pack.lora.metadata import FIELD_LIMIT, TOTAL_LIMIT, bounded_fields, read_pack_metadata

LCM = {"kind": "lcm", "name": "lcm-lora-sdv1-5", "weight": 1.0}


def _read(metadata):
    return read_pack_metadata(metadata, kinds.is_accelerator, kinds.STYLE)


@pytest.mark.parametrize("sources", [
    "1.5", "\"text\"", "{\"kind\": \"lcm\"}", "not json", "[[[[",
    json.dumps([{"kind": "lcm", "weight": "abc"}]),          # could not convert string to float
    json.dumps([{"kind": ["lcm"], "weight": 1.0}]),           # unhashable type: 'list'
    json.dumps([1.5, None, "lcm", {"kind": None}]),
    json.dumps([{"kind": "lcm", "weight": 1e400}]),
    json.dumps([{"kind": "lcm", "weight": {"a": 1}}]),
])
def test_malformed_sources_are_ignored_with_a_report_line(sources):
    found = _read({"lcmpack.sources": sources})
    assert found.sources_kind is None and found.kind is None
    assert any("lcmpack.sources" in note for note in found.notes)


def test_well_formed_sources_name_the_single_accelerator():
    mix = [LCM, {"kind": "style", "name": "style", "weight": 0.8}, {"kind": "TCD", "weight": 0.0}]
    assert _read({"lcmpack.sources": json.dumps(mix)}).sources_kind == "lcm"
    assert _read({"lcmpack.sources": json.dumps([LCM, {"kind": "tcd", "weight": 1}])}).sources_kind is None


@pytest.mark.parametrize(("value", "kind"), [("LCM", "lcm"), (" Hyper-SD ", "hyper-sd"), ("Style", "style"),
                                             ("lcm", "lcm")])
def test_known_kinds_match_case_insensitively(value, kind):
    found = _read({"lcmpack.kind": value})
    assert found.kind == kind and not found.notes


@pytest.mark.parametrize("value", ["bogus", "lcm2", "x" * 100_000])
def test_unknown_kinds_are_ignored_with_a_report_line(value):
    found = _read({"lcmpack.kind": value})
    assert found.kind is None
    assert any("not a kind the pack knows" in note for note in found.notes)
    assert all(len(note) < 300 for note in found.notes)


def test_fields_are_bounded_each_and_in_all():
    kept, notes = bounded_fields({"a": "x" * (FIELD_LIMIT + 10), **{f"k{i}": "y" * FIELD_LIMIT for i in range(8)},
                                  "n": 3, 4: "z"})
    assert len(kept["a"]) == FIELD_LIMIT
    assert sum(len(k) + len(v) for k, v in kept.items()) <= TOTAL_LIMIT + 64
    assert "n" not in kept and 4 not in kept
    assert any("not text" in n for n in notes) and any("cut" in n for n in notes)
    assert any("in all ignored" in n for n in notes)


def test_unknown_kind_falls_back_to_the_name_and_upper_case_lcm_is_lcm(tmp_path):
    bogus = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "my-style.safetensors", rank=2,
                                  metadata={"lcmpack.kind": "bogus"})
    lora = read_lora_file(bogus)
    assert detect_kind(lora)[0] == "style" and lora.kind == "style"
    assert any("lcmpack.kind 'bogus' is not a kind the pack knows" in note for note in lora.notes)
    named = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "lcm-lora-sdv1-5.safetensors", rank=2,
                                  metadata={"lcmpack.kind": "bogus"})
    assert read_lora_file(named).kind == "lcm"
    upper = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "plain.safetensors", rank=2,
                                  metadata={"lcmpack.kind": "LCM"})
    assert read_lora_file(upper).kind == "lcm"


def test_malformed_sources_in_a_file_load_with_a_report_line(tmp_path):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "mix.safetensors", rank=2,
                                 metadata={"lcmpack.sources": json.dumps([{"kind": ["lcm"], "weight": "abc"}])})
    lora = read_lora_file(path)
    assert lora.kind == "style"
    assert any("malformed source" in note for note in lora.notes)


def test_a_bogus_kind_file_does_not_block_a_real_lcm_lora(comfy, comfy_loras):
    from conftest import SD15_CKPT

    loras.make_kohya_lora(SD15_UNET_CONFIG, comfy_loras / "bogus-kind.safetensors", rank=2, seed=3,
                          metadata={"lcmpack.kind": "bogus"})
    loras.make_kohya_lora(SD15_UNET_CONFIG, comfy_loras / "lcm-lora-sdv1-5.safetensors", rank=2, kind="lcm")
    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]
    first = comfy.run_node("LCMPack_LCMLoraLoader", model=model, clip=clip, lora_name="bogus-kind.safetensors")
    second = comfy.run_node("LCMPack_LCMLoraLoader", model=first[0], clip=first[1],
                            lora_name="lcm-lora-sdv1-5.safetensors")
    assert "not a kind the pack knows" in first[2]
    assert "Kind: bogus" not in first[2] and "LCM" in second[2]


def test_an_oversized_adapter_config_is_refused_by_name(tmp_path):
    from lcm_lora_pack.lora.errors import LoraFileError
    from lcm_lora_pack.lora.io import ADAPTER_CONFIG_LIMIT, read_adapter_config

    lora = tmp_path / "peft.safetensors"
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "pad": "' + "x" * ADAPTER_CONFIG_LIMIT + '"}')
    with pytest.raises(LoraFileError, match="adapter_config.json' next to LoRA 'peft.safetensors' is larger than"):
        read_adapter_config(lora)
