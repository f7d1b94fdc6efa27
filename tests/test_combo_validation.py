"""Combo inputs checked at validation time (issue 22, weak messages): a bad preset, loader kind or real-time mode
is refused by ComfyUI's validate_prompt, naming the input, instead of failing (or passing silently) at run time."""
from __future__ import annotations

import pytest
from conftest import SD15_CKPT


@pytest.mark.parametrize(("node", "inputs", "name"), [
    ("LCMPack_KSamplerLCM", {"preset": "bogus"}, "preset"),
    ("LCMPack_KSamplerLCM", {"preset": ""}, "preset"),
    ("LCMPack_LCMLoraLoader", {"kind": "bogus"}, "kind"),
    ("LCMPack_LCMFastPath", {"mode": "bogus"}, "mode"),
    ("LCMPack_FastVAEDecode", {"mode": "bogus"}, "mode"),
])
def test_bad_combo_values_fail_validation_naming_the_input(comfy, node, inputs, name):
    result = comfy.node_class(node).validate_inputs(**inputs)
    assert isinstance(result, str) and f"{name}=" in result and "pick one of them" in result


def test_validate_prompt_refuses_a_bad_fast_path_mode(comfy):
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
              "2": {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": ["1", 0], "mode": "bogus"}},
              "3": {"class_type": "LCMPack_FastVAEDecode",
                    "inputs": {"samples": ["4", 0], "vae": ["1", 2], "mode": "bogus"}},
              "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "5": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    ok, _, _, node_errors = comfy.validate(prompt)
    assert not ok and "3" in node_errors
    assert "mode='bogus'" in str(node_errors["3"])
