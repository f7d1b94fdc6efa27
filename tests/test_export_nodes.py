"""LoRA Export node in real ComfyUI: exported files load in core LoraLoader and diffusers load_lora_weights,
concat reproduces the mix, the SVD's reported error is the true error, bad input, the export graph."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import SD15_CKPT
from harness.diffusers_unet import clip_l_text_encoder, comfy_weights_of_diffusers, diffusers_unet, lora_pipeline
from lcm_lora_pack.devkit import models
from lcm_lora_pack.devkit.host import PromptFailed
from safetensors import safe_open
from safetensors.torch import load_file
from test_mix_nodes import LCM, STYLE, STYLE2, TEXT, XL, base, lora_files, mixed, patched_weights, rel, stack  # noqa: F401

ITEMS = [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style"), (STYLE2, 0.5, "style")]


def export(comfy, model, name, mode="concat", rank=64, overwrite=False, items=ITEMS, save_dtype="fp32"):
    """Precision tests write fp32 (the node's default is fp16, like published LoRAs)."""
    (report,) = comfy.run_node("LCMPack_LoraExport", model=model, stack=stack(comfy, *items), filename=name,
                               mode=mode, rank=rank, overwrite=overwrite, save_dtype=save_dtype)
    return report, comfy.base / "models" / "loras" / f"{name}.safetensors"


def core_loaded(comfy, base, file_name):  # noqa: F811 (shared fixtures from test_mix_nodes)
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
def reference(comfy, base, lora_files):  # noqa: F811 (shared fixtures from test_mix_nodes)
    """Base weights and the mixer's patched weights for ITEMS."""
    original = {k: v.detach().clone() for k, v in base[0].model.state_dict().items() if k.startswith("diffusion_model.")}
    return original, patched_weights(mixed(comfy, base[0], ITEMS)[0])


def test_concat_export_loads_in_core_and_diffusers_and_reproduces_the_mix(comfy, base, reference):  # noqa: F811 (shared fixtures from test_mix_nodes)
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


@pytest.mark.parametrize(("save_dtype", "dtype"), [("fp32", torch.float32), ("fp16", torch.float16),
                                                   ("bf16", torch.bfloat16)])
def test_svd_export_reports_the_true_error_and_loads_everywhere(comfy, base, reference, save_dtype, dtype):  # noqa: F811 (shared fixtures from test_mix_nodes)
    """The reported errors are those of the factors as written (after the cast to the save dtype)."""
    original, mix_w = reference
    report, path = export(comfy, base[0], f"export-svd-{save_dtype}", mode="svd", rank=3, save_dtype=save_dtype)
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
        conv = handle.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight")
        conv_up = handle.get_tensor("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight")
    assert conv.shape == (3, 320, 3, 3) and conv_up.shape == (320, 3, 1, 1) and meta["lcmpack.rank"] == "3"
    assert conv.dtype == conv_up.dtype == dtype and meta["lcmpack.save_dtype"] == save_dtype
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


def test_text_encoder_modules_are_exported_and_load_into_core_clip(comfy, base):  # noqa: F811 (shared fixtures from test_mix_nodes)
    model, clip = base
    items = [(LCM, 1.0, "accelerator"), (TEXT, 0.6, "style")]
    comfy.run_node("LCMPack_LoraExport", model=model, clip=clip, stack=stack(comfy, *items), filename="export-te",
                   mode="concat", rank=1, overwrite=False, save_dtype="fp32")
    with safe_open(comfy.base / "models" / "loras" / "export-te.safetensors", "pt") as handle:
        te_keys = sorted(k for k in handle.keys() if k.startswith("lora_te"))
    assert te_keys == [f"lora_te_text_model_encoder_layers_0_{m}.{t}" for m in ("mlp_fc1", "self_attn_q_proj")
                       for t in ("alpha", "lora_down.weight", "lora_up.weight")]
    mixer_clip = comfy.run_node("LCMPack_LoraMixer", model=model, clip=clip, stack=stack(comfy, *items),
                                style_normalization="none", allow_partial=False)[1]
    core_clip = comfy.run_node("LoraLoader", model=model, clip=clip, lora_name="export-te.safetensors",
                               strength_model=1.0, strength_clip=1.0)[1]
    prefix = "clip_l.transformer.text_model.encoder.layers.0."
    ours, core = (patched_weights(c.patcher, prefix) for c in (mixer_clip, core_clip))
    for key in ours:
        assert rel(core[key].float(), ours[key].float()) < torch.finfo(ours[key].dtype).eps, key


def _diffusers_text_encoder_after(path, weight: float, clip_sd, unet_sd) -> dict[str, torch.Tensor]:
    text_encoder = clip_l_text_encoder(clip_sd)
    pipe = lora_pipeline(diffusers_unet(models.SD15_UNET_CONFIG, unet_sd), text_encoder)
    pipe.load_lora_weights(str(path), adapter_name="lora")
    pipe.set_adapters(["lora"], adapter_weights=[weight])
    pipe.fuse_lora(components=["unet", "text_encoder"])
    pipe.unload_lora_weights()
    return {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}


def test_text_encoder_modules_of_the_export_load_in_diffusers_like_the_source(comfy, base, reference):  # noqa: F811 (shared fixtures from test_mix_nodes)
    """diffusers applies the exported lora_te_ modules exactly as it applies the source kohya file at λ.

    (diffusers 0.42.1 with transformers 5 drops kohya text-encoder *attention* modules of any file — its
    converter emits legacy ``to_q_lora`` names the PEFT loader does not know — so only the MLP changes; the
    export behaves exactly like the source file there too.)
    """
    loras = comfy.base / "models" / "loras"
    if not (loras / "export-te.safetensors").exists():
        comfy.run_node("LCMPack_LoraExport", model=base[0], clip=base[1], filename="export-te", mode="concat",
                       rank=1, overwrite=False, save_dtype="fp32", stack=stack(comfy, (LCM, 1.0, "accelerator"), (TEXT, 0.6, "style")))
    clip_sd = models.build_clip_l_state_dict(seed=2, prefix="")
    before = {k.removeprefix("text_model."): v for k, v in clip_sd.items()}
    exported = _diffusers_text_encoder_after(loras / "export-te.safetensors", 1.0, clip_sd, reference[0])
    source = _diffusers_text_encoder_after(loras / TEXT, 0.6, clip_sd, reference[0])
    for key in exported:
        if key.startswith("encoder.layers.0."):
            assert rel(exported[key], source[key]) < 1e-5 or torch.equal(exported[key], source[key]), key
    tensors = load_file(str(loras / TEXT))
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    expected = 0.6 * (2.0 / 4) * tensors[f"{name}.lora_up.weight"] @ tensors[f"{name}.lora_down.weight"]
    key = "encoder.layers.0.mlp.fc1.weight"
    assert rel(exported[key] - before[key], expected) < 1e-5


def test_existing_file_is_refused_unless_overwrite(comfy, base, lora_files):  # noqa: F811 (shared fixtures from test_mix_nodes)
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
def test_bad_exports_fail_clearly_and_write_nothing(comfy, base, lora_files, kwargs, message):  # noqa: F811 (shared fixtures from test_mix_nodes)
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


def test_export_graph_runs_in_comfyui(comfy, lora_files):  # noqa: F811 (shared fixtures from test_mix_nodes)
    """Without save_dtype (a graph saved before it existed) the file is written in fp16, alpha in fp32."""
    outputs = comfy.run_prompt(_export_prompt("graph-export"))
    assert outputs["export"]["text"][0].startswith("Exported graph-export.safetensors (svd, fp16, rank 2")
    path = comfy.base / "models" / "loras" / "graph-export.safetensors"
    with safe_open(path, "pt") as handle:
        meta = handle.metadata()
        assert meta["lcmpack.mode"] == "svd" and meta["lcmpack.rank"] == "2" and meta["lcmpack.save_dtype"] == "fp16"
        dtypes = {("alpha" if key.endswith(".alpha") else "factor", handle.get_tensor(key).dtype)
                  for key in handle.keys()}
    assert dtypes == {("alpha", torch.float32), ("factor", torch.float16)}


def test_unknown_save_dtype_fails_validation(comfy, lora_files):  # noqa: F811 (shared fixtures from test_mix_nodes)
    prompt = _export_prompt("bad-dtype")
    prompt["export"]["inputs"]["save_dtype"] = "fp8"
    with pytest.raises(PromptFailed, match="save_dtype|fp8"):
        comfy.run_prompt(prompt)
    assert not (comfy.base / "models" / "loras" / "bad-dtype.safetensors").exists()


@pytest.mark.parametrize("filename", ["../escape", "sub/name", "..", ""])
def test_export_names_with_paths_fail_validation(comfy, lora_files, filename):  # noqa: F811 (shared fixtures from test_mix_nodes)
    with pytest.raises(PromptFailed, match="path separator|'\\.\\.'|empty"):
        comfy.run_prompt(_export_prompt(filename))
    assert not (comfy.base / "models" / "escape.safetensors").exists()


def test_rank_below_one_fails_validation(comfy, lora_files):  # noqa: F811 (shared fixtures from test_mix_nodes)
    with pytest.raises(PromptFailed, match="rank"):
        comfy.run_prompt(_export_prompt("rank-zero", rank=0))
    assert not (comfy.base / "models" / "loras" / "rank-zero.safetensors").exists()
