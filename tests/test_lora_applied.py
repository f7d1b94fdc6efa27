"""The record of applied LoRAs in ``model_options`` (pure): found by file or by content hash."""
from __future__ import annotations

import copy

from lcm_lora_pack.lora import applied


def test_record_is_found_by_file_or_content_hash_and_survives_deepcopy():
    options: dict = {}
    applied.record_applied(options, "lcm-lora-sdv1-5.safetensors", "file-a", "lcm", "sd1.x", 1.0,
                           content_sha256="tensors-a")
    applied.record_applied(options, "watercolor.safetensors", "file-b", "style", "sd1.x", 0.8)
    cloned = copy.deepcopy(options)  # what ModelPatcher.clone() does with model_options
    assert applied.find_same_file(cloned, "file-a")["name"] == "lcm-lora-sdv1-5.safetensors"
    assert applied.find_same_file(cloned, "other-file", "tensors-a")["name"] == "lcm-lora-sdv1-5.safetensors"
    assert applied.find_same_file(cloned, "file-b")["strength"] == 0.8
    assert applied.find_same_file(cloned, "", "") is None and applied.find_same_file(cloned, "nope") is None
    assert applied.find_acceleration(cloned)["kind"] == "lcm"
    assert [e["name"] for e in applied.applied_loras(cloned)] == ["lcm-lora-sdv1-5.safetensors",
                                                                  "watercolor.safetensors"]


def test_no_acceleration_recorded():
    options: dict = {}
    applied.record_applied(options, "style.safetensors", "f", "style", "sdxl", 1.0)
    assert applied.find_acceleration(options) is None and applied.applied_loras({}) == []
