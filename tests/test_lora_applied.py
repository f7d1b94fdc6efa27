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


def test_the_largest_scale_travels_with_the_model_and_names_the_nan_cause():
    """The record on the model (not a process-global table keyed by file hash) carries the largest alpha/rank:
    the NaN explanation reads it from the model's options alone (issue 25)."""
    import torch
    from lcm_lora_pack.devkit.host import prepare_import
    from lcm_lora_pack.lora.types import LoraModule

    prepare_import()
    from lcm_lora_pack.host.comfy_finite import _lora_causes

    modules = {"lora_unet_a": LoraModule(torch.zeros(4, 8), torch.zeros(8, 4), alpha=4.0),
               "lora_unet_b": LoraModule(torch.zeros(4, 8), torch.zeros(8, 4), alpha=1e30)}
    options: dict = {}
    applied.record_applied(options, "huge.safetensors", "never-read-in-this-process", "style", "sd1.x", 1.0,
                           largest=applied.largest_scale(modules))
    cloned = copy.deepcopy(options)
    assert applied.applied_loras(cloned)[0]["largest"] == {"module": "lora_unet_b", "alpha": 1e30, "rank": 4}
    causes = _lora_causes(cloned)
    assert len(causes) == 1 and "'huge.safetensors' has alpha 1e+30 at rank 4 in module 'lora_unet_b'" in causes[0]
