"""LoRA Export node in real ComfyUI: exported files load in core LoraLoader and diffusers load_lora_weights,
concat reproduces the mix, the SVD's reported error is the true error, bad input, the export graph."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SD15_CKPT
from harness import models
from harness.comfy_host import PromptFailed
from harness.diffusers_unet import comfy_weights_of_diffusers, diffusers_unet, lora_pipeline
from safetensors import safe_open
from test_mix_nodes import LCM, STYLE, STYLE2, XL, base, lora_files, mixed, patched_weights, rel, stack  # noqa: F401

ITEMS = [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style"), (STYLE2, 0.5, "style")]


def export(comfy, model, name, mode="concat", rank=64, overwrite=False, items=ITEMS):
    (report,) = comfy.run_node("LCMPack_LoraExport", model=model, stack=stack(comfy, *items), filename=name,
                               mode=mode, rank=rank, overwrite=overwrite)
    return report, comfy.base / "models" / "loras" / f"{name}.safetensors"


def core_loaded(comfy, base, file_name):
    model, clip = base
    return patched_weights(comfy.run_node("LoraLoader", model=model, clip=clip, lora_name=file_name,
                                          strength_model=1.0, strength_clip=1.0)[0])


def diffusers_loaded(path, original):
    unet = diffusers_unet(models.SD15_UNET_CONFIG, original)
    pipe = lora_pipeline(unet)
    pipe.load_lora_weights(str(path), adapter_name="export")
    pipe.fuse_lora(components=["unet"])
    pipe.unload_lora_weights()
    return comfy_weights_of_diffusers(unet, models.SD15_UNET_CONFIG)


@pytest.fixture(scope="module")
def reference(comfy, base, lora_files):
    """Base weights and the mixer's patched weights for ITEMS."""
    original = {k: v.detach().clone() for k, v in base[0].model.state_dict().items() if k.startswith("diffusion_model.")}
    return original, patched_weights(mixed(comfy, base[0], ITEMS)[0])


def test_concat_export_loads_in_core_and_diffusers_and_reproduces_the_mix(comfy, base, reference):
    original, mix_w = reference
    report, path = export(comfy, base[0], "export-concat")
    with safe_open(path, "pt") as handle:
        meta, keys = handle.metadata(), list(handle.keys())
    assert all(k.startswith("lora_unet_") and "input_blocks" not in k for k in keys)
    sources = json.loads(meta["lcmpack.sources"])
    assert [s["name"] for s in sources] == [LCM, STYLE, STYLE2] and all(len(s["sha256"]) == 64 for s in sources)
    assert json.loads(meta["lcmpack.accelerator"]) == [LCM] and meta["lcmpack.mode"] == "concat"
    assert meta["lcmpack.base_family"] == "sd1.x" and meta["lcmpack.rank"] == "14"
    assert float(meta["lcmpack.error_total"]) < 1e-6 and "Exported export-concat.safetensors" in report
    for loaded in (core_loaded(comfy, base, path.name), diffusers_loaded(path, original)):
        changed = [k for k in original if not torch.equal(mix_w[k], original[k])]
        assert changed and all(not torch.equal(loaded[k], original[k]) for k in changed)
        for key in original:
            assert rel(loaded[key], mix_w[key]) < 1e-5, key
        for key in changed:
            assert rel(loaded[key] - original[key], mix_w[key] - original[key]) < 1e-4, key


def test_svd_export_reports_the_true_error_and_loads_everywhere(comfy, base, reference):
    original, mix_w = reference
    report, path = export(comfy, base[0], "export-svd", mode="svd", rank=3)
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
        conv = handle.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight")
        conv_up = handle.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight")
    assert conv.shape == (3, 320, 3, 3) and conv_up.shape == (320, 3, 1, 1) and meta["lcmpack.rank"] == "3"
    per_layer = json.loads(meta["lcmpack.error_per_layer"])
    for loaded in (core_loaded(comfy, base, path.name), diffusers_loaded(path, original)):
        err_sq = norm_sq = 0.0
        for key, reported in per_layer.items():
            target, got = mix_w[key] - original[key], loaded[key] - original[key]
            true = rel(got, target)
            assert math.isclose(reported, true, rel_tol=1e-3, abs_tol=1e-5), key
            err_sq += float((got - target).norm()) ** 2
            norm_sq += float(target.norm()) ** 2
        assert math.isclose(float(meta["lcmpack.error_total"]), math.sqrt(err_sq / norm_sq), rel_tol=1e-3)
    assert 0.0 < float(meta["lcmpack.error_total"]) < 1.0
    assert f"total {float(meta['lcmpack.error_total']):.3e}" in report


def test_existing_file_is_refused_unless_overwrite(comfy, base, lora_files):
    _, path = export(comfy, base[0], "export-once", items=ITEMS[:1])
    before = path.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        export(comfy, base[0], "export-once", items=ITEMS[:2])
    assert path.read_bytes() == before
    export(comfy, base[0], "export-once", items=ITEMS[:2], overwrite=True)
    assert path.read_bytes() != before


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="svd", rank=15), "above the concatenated rank 14"),
    (dict(items=[(LCM, 1.0, "accelerator"), (XL, 1.0, "style")]), "Vega style LoRA but the model is SD1.x"),
    (dict(items=[(LCM, 0.0, "accelerator")]), "all LoRA weights are zero"),
])
def test_bad_exports_fail_clearly_and_write_nothing(comfy, base, lora_files, kwargs, message):
    folder = comfy.base / "models" / "loras"
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(Exception, match=message):
        export(comfy, base[0], "export-bad", **kwargs)
    assert sorted(p.name for p in folder.iterdir()) == before


def _export_prompt(filename, rank=2):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "s1": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": LCM, "weight": 1.0, "role": "accelerator"}},
        "s2": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": STYLE, "weight": 0.8, "role": "style",
                                                             "stack": ["s1", 0]}},
        "export": {"class_type": "LCMPack_LoraExport", "inputs": {
            "model": ["ckpt", 0], "stack": ["s2", 0], "filename": filename, "mode": "svd", "rank": rank,
            "overwrite": False}},
    }


def test_export_graph_runs_in_comfyui(comfy, lora_files):
    comfy.run_prompt(_export_prompt("graph-export"))
    path = comfy.base / "models" / "loras" / "graph-export.safetensors"
    with safe_open(path, "pt") as handle:
        assert handle.metadata()["lcmpack.mode"] == "svd" and handle.metadata()["lcmpack.rank"] == "2"


@pytest.mark.parametrize("filename", ["../escape", "sub/name", "..", ""])
def test_export_names_with_paths_fail_validation(comfy, lora_files, filename):
    with pytest.raises(PromptFailed, match="path separator|'\\.\\.'|empty"):
        comfy.run_prompt(_export_prompt(filename))
    assert not (comfy.base / "models" / "escape.safetensors").exists()
