"""The LoRA-file helpers of devkit/loras.py produce files that core ComfyUI maps completely."""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT, VEGA_UNET
from lcm_lora_pack.devkit import loras
from safetensors import safe_open


def _core_key_map(model) -> dict:
    import comfy.lora

    return comfy.lora.model_lora_keys_unet(model.model, {})


@pytest.mark.parametrize("naming", ["diffusers", "ldm"])
def test_sd15_kohya_lora_maps_fully_in_core(comfy, tmp_path, naming):
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    path = loras.make_kohya_lora(model, tmp_path / "lcm-lora-sdv1-5.safetensors", rank=4, alpha=2,
                                 naming=naming, kind="lcm")
    key_map = _core_key_map(model)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in keys}
    assert len(modules) == 10 * 4  # transformer blocks: 1 down, 1 middle, 2 up
    assert all(m in key_map for m in modules)
    assert "lcm" in metadata["modelspec.title"].lower()
    with safe_open(str(path), "pt") as f:
        assert all(f.get_tensor(k).item() == 2.0 for k in keys if k.endswith(".alpha"))


def test_vega_kohya_lora_shapes_match_model(comfy, tmp_path):
    (model,) = comfy.run_node("UNETLoader", unet_name=VEGA_UNET, weight_dtype="default")
    tensors = loras.kohya_state_dict(model, rank=2, seed=3)
    key_map = _core_key_map(model)
    weights = model.model.state_dict()
    for key, down in tensors.items():
        if not key.endswith(".lora_down.weight"):
            continue
        module = key[: -len(".lora_down.weight")]
        target = weights[key_map[module]]
        up = tensors[module + ".lora_up.weight"]
        assert (up.flatten(1) @ down.flatten(1)).shape == target.flatten(1).shape
    # Vega: 15 transformer blocks (6 down, 9 up; 8 attention linears each) in 10 stacks (proj_in/out each)
    assert sum(k.endswith(".alpha") for k in tensors) == 15 * 8 + 10 * 2
    assert torch.isfinite(torch.stack([t.abs().max() for t in tensors.values()])).all()
