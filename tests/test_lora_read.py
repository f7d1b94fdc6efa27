"""Reading LoRA files: formats, alpha sources, family and kind detection (pure, no ComfyUI boot)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG, VEGA_UNET_CONFIG
from lcm_lora_pack.lora.io import read_lora_file
from lcm_lora_pack.lora.resolve import module_spellings

SD2_UNET_CONFIG = {**SD15_UNET_CONFIG, "context_dim": 1024, "use_linear_in_transformer": True,
                   "num_heads": -1, "num_head_channels": 64}
SDXL_UNET_CONFIG = {**VEGA_UNET_CONFIG, "transformer_depth": [0, 0, 2, 2, 10, 10],
                    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10}
SSD1B_UNET_CONFIG = {**VEGA_UNET_CONFIG, "transformer_depth": [0, 0, 2, 2, 4, 4],
                     "transformer_depth_output": [0, 0, 0, 1, 1, 2, 10, 4, 4]}


@pytest.mark.parametrize(("config", "family"), [
    (SD15_UNET_CONFIG, "sd1.x"), (SD2_UNET_CONFIG, "sd2.x"), (SDXL_UNET_CONFIG, "sdxl"),
    (SSD1B_UNET_CONFIG, "ssd-1b"), (VEGA_UNET_CONFIG, "vega")], ids=["sd15", "sd2", "sdxl", "ssd1b", "vega"])
@pytest.mark.parametrize("naming", ["diffusers", "ldm"])
def test_family_from_shapes(tmp_path, config, family, naming):
    path = loras.make_kohya_lora(config, tmp_path / "some-lora.safetensors", rank=2, naming=naming)
    lora = read_lora_file(path)
    assert (lora.family, lora.format, lora.kind) == (family, "kohya", "style")


@pytest.mark.parametrize(("file_name", "metadata", "kind"), [
    ("lcm-lora-sdv1-5.safetensors", {}, "lcm"),
    ("pytorch_lora_weights.safetensors", {"modelspec.title": "LCM-LoRA SD1.5"}, "lcm"),
    ("Segmind-VegaRT.safetensors", {}, "lcm"),
    ("Hyper-SD15-8steps-lora.safetensors", {}, "hyper-sd"),
    ("TCD-SD15-LoRA.safetensors", {}, "tcd"),
    ("sdxl_lightning_4step_lora.safetensors", {}, "lightning"),
    ("dmd2_sdxl_4step_lora.safetensors", {}, "dmd2"),
    ("my-style.safetensors", {"ss_output_name": "watercolor"}, "style"),
    ("rename-me.safetensors", {"ss_training_comment": "trained with latent consistency distillation"}, "lcm"),
])
def test_kind_from_name_and_metadata(tmp_path, file_name, metadata, kind):
    path = loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / file_name, rank=2, metadata=metadata)
    assert read_lora_file(path).kind == kind


def test_kohya_alpha_and_missing_alpha(tmp_path):
    with_alpha = read_lora_file(loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "a.safetensors", rank=4, alpha=1))
    assert {m.scale for m in with_alpha.modules.values()} == {0.25}
    no_alpha = read_lora_file(loras.make_kohya_lora(SD15_UNET_CONFIG, tmp_path / "b.safetensors", rank=4,
                                                    include_alpha=False))
    assert {m.scale for m in no_alpha.modules.values()} == {1.0}
    assert any("alpha = rank" in note for note in no_alpha.notes)


def _peft_like(tmp_path, prefix: str) -> dict[str, torch.Tensor]:
    """PEFT-spelled keys (lora_A/lora_B) for the SD1.5 attention layers, from the kohya helper's tensors."""
    tensors = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, naming="ldm")
    import comfy.utils

    ldm_to_diffusers = {v[: -len(".weight")].replace(".", "_"): k[: -len(".weight")]
                        for k, v in comfy.utils.unet_to_diffusers(SD15_UNET_CONFIG).items() if k.endswith(".weight")}
    out = {}
    for key, tensor in tensors.items():
        module, _, suffix = key.partition(".")
        name = prefix + ldm_to_diffusers[module.removeprefix("lora_unet_")]
        if suffix != "alpha":
            out[f"{name}.{'lora_A' if 'down' in suffix else 'lora_B'}.weight"] = tensor
    return out


def test_peft_alpha_from_diffusers_metadata_with_alpha_pattern(tmp_path):
    tensors = _peft_like(tmp_path, "unet.")
    config = {"r": 4, "lora_alpha": 2, "alpha_pattern": {"attn2.to_k": 8}, "use_rslora": False}
    metadata = {"lora_adapter_metadata": json.dumps({f"unet.{k}": v for k, v in config.items()})}
    lora = read_lora_file(loras.save_lora(tensors, tmp_path / "peft.safetensors", metadata))
    assert lora.format == "peft" and lora.family == "sd1.x"
    scales = {name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1]: m.scale for name, m in lora.modules.items()}
    assert scales["attn2.to_k"] == 2.0 and scales["attn1.to_k"] == 0.5 and scales["attn2.to_q"] == 0.5


def test_peft_alpha_from_adapter_config_json_and_rslora(tmp_path):
    tensors = _peft_like(tmp_path, "base_model.model.")
    path = loras.save_lora(tensors, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 6, "use_rslora": True}))
    lora = read_lora_file(path)
    assert {round(m.scale, 12) for m in lora.modules.values()} == {round(6 / math.sqrt(4), 12)}
    assert any("adapter_config.json" in note for note in lora.notes)


def test_peft_without_alpha_information_assumes_rank(tmp_path):
    lora = read_lora_file(loras.save_lora(_peft_like(tmp_path, "unet."), tmp_path / "bare.safetensors"))
    assert {m.scale for m in lora.modules.values()} == {1.0}
    assert any("alpha = rank" in note for note in lora.notes)


def test_module_spellings_reach_core_kohya_names():
    peft = module_spellings("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0")
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0" in peft
    base = module_spellings("base_model.model.mid_block.attentions.0.proj_in")
    assert "lora_unet_mid_block_attentions_0_proj_in" in base
    legacy = module_spellings("unet.up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor.to_out")
    assert legacy[0].endswith("processor.to_out")  # core's own legacy spelling is tried first
    assert "lora_unet_up_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0" in legacy
    text = module_spellings("text_encoder_2.text_model.encoder.layers.3.self_attn.q_proj")
    assert "lora_te2_text_model_encoder_layers_3_self_attn_q_proj" in text


def test_legacy_diffusers_processor_and_text_encoder_layouts(tmp_path):
    down, up = torch.randn(4, 768) / 30, torch.randn(768, 4) / 30
    unet_key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora"
    text_key = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer"
    tensors = {f"{unet_key}.down.weight": down, f"{unet_key}.up.weight": torch.randn(320, 4) / 30,
               f"{text_key}.down.weight": down.clone(), f"{text_key}.up.weight": up}
    lora = read_lora_file(loras.save_lora(tensors, tmp_path / "legacy.safetensors"))
    assert lora.format == "diffusers-legacy" and lora.family == "sd1.x" and len(lora.modules) == 2


def test_lycoris_and_dora_tensors_are_left_to_core(tmp_path):
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    tensors = {f"{name}.hada_w1_a": torch.randn(320, 2), f"{name}.hada_w1_b": torch.randn(2, 768),
               f"{name}.hada_w2_a": torch.randn(320, 2), f"{name}.hada_w2_b": torch.randn(2, 768),
               f"{name}.alpha": torch.tensor(2.0)}
    dora = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
    tensors |= {f"{dora}.lora_down.weight": torch.randn(2, 768), f"{dora}.lora_up.weight": torch.randn(320, 2),
                f"{dora}.dora_scale": torch.ones(320, 1)}
    lora = read_lora_file(loras.save_lora(tensors, tmp_path / "loha.safetensors"))
    assert lora.modules == {}
    assert set(lora.extra) == set(tensors)
