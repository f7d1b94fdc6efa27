"""Kind detection on fixtures shaped like the published accelerator files: metadata, then name, then content.

Fixtures (generated, nothing downloaded) on the tiny SD1.5-family UNet:

* LCM-LoRA as diffusers' ``train_lcm_distill_lora_sd_wds.py`` writes it: ``LoraConfig(r=64, lora_alpha=64,
  target_modules=[to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.0.proj, ff.net.2, conv1, conv2,
  conv_shortcut, downsamplers.0.conv, upsamplers.0.conv, time_emb_proj])`` on the UNet, saved with
  ``StableDiffusionPipeline.save_lora_weights`` (PEFT keys, no alpha); and the kohya-converted spelling of the
  published ``latent-consistency/lcm-lora-sdv1-5`` file (``lora_unet_<diffusers name>``, one ``.alpha``).
* the other kinds under their authors' published file names (``lora/kinds.py`` lists the cards).
* style LoRAs: rank 8 attention-only, and a rank-64 LoCon trained by kohya (``ss_network_module`` metadata).
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.devkit.host import prepare_import
from lcm_lora_pack.devkit.loras import make_kohya_lora, save_lora
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG

prepare_import()

from lcm_lora_pack.lora.io import read_lora_file  # noqa: E402

LCM_SCRIPT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                      "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]


def _diffusers_script_lcm_lora(folder):
    """What diffusers' LCM-LoRA script saves: PEFT LoRA (r 64, alpha 64) via ``save_lora_weights``."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from harness.diffusers_unet import diffusers_kwargs
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**diffusers_kwargs(SD15_UNET_CONFIG))
    unet.add_adapter(LoraConfig(r=64, lora_alpha=64, target_modules=LCM_SCRIPT_TARGETS, init_lora_weights="gaussian"))
    state = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=state)
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lcm_script_file(tmp_path_factory):
    return _diffusers_script_lcm_lora(tmp_path_factory.mktemp("lcm-script"))


def _kohya(path, **kwargs):
    return make_kohya_lora(SD15_UNET_CONFIG, path, **kwargs)


def test_published_lcm_lora_saved_as_pytorch_lora_weights_is_lcm_by_content(lcm_script_file):
    lora = read_lora_file(lcm_script_file)
    assert lora.name == "pytorch_lora_weights.safetensors"
    assert lora.kind == "lcm"
    assert any("decided by content: rank 64" in note for note in lora.notes), lora.notes


@pytest.mark.parametrize("name", ["pytorch_lora_weights.safetensors", "my_renamed_speedup.safetensors"])
def test_kohya_spelling_of_the_published_lcm_lora_is_lcm_by_content(tmp_path, name):
    path = _kohya(tmp_path / name, rank=64, alpha=8.0, targets="lcm-full")
    lora = read_lora_file(path)
    assert lora.kind == "lcm" and any("decided by content" in n for n in lora.notes)


@pytest.mark.parametrize("file_name, kind", [
    ("lcm-lora-sdv1-5.safetensors", "lcm"), ("lcm-lora-sdxl.safetensors", "lcm"),
    ("TCD-SD15-LoRA.safetensors", "tcd"), ("Hyper-SD15-2steps-lora.safetensors", "hyper-sd"),
    ("Hyper-SDXL-8steps-lora.safetensors", "hyper-sd"), ("Hyper-SD15-1step-lora.safetensors", "hyper-sd-unified"),
    ("Hyper-SDXL-1step-lora.safetensors", "hyper-sd-unified"),
    ("Hyper-SD15-8steps-CFG-lora.safetensors", "hyper-sd-cfg"), ("Hyper-SDXL-12steps-CFG-lora.safetensors",
                                                                 "hyper-sd-cfg"),
    ("sdxl_lightning_4step_lora.safetensors", "lightning"), ("dmd2_sdxl_4step_lora_fp16.safetensors", "dmd2"),
    ("flash-sdxl.safetensors", "flash"), ("pcm_sd15_smallcfg_4step_converted.safetensors", "pcm"),
    ("pcm_sdxl_lcmlike_lora_converted.safetensors", "pcm"),
])
def test_published_file_names_decide_the_kind(tmp_path, file_name, kind):
    lora = read_lora_file(_kohya(tmp_path / file_name, rank=4))
    assert lora.kind == kind
    assert any("decided by the file name" in note for note in lora.notes), lora.notes


def test_metadata_comes_before_the_name_and_the_content(tmp_path):
    path = _kohya(tmp_path / "pytorch_lora_weights.safetensors", rank=64, targets="lcm-full",
                  metadata={"modelspec.title": "TCD-LoRA SD1.5"})
    lora = read_lora_file(path)
    assert lora.kind == "tcd" and any("decided by metadata modelspec.title" in n for n in lora.notes)


def test_the_packs_own_metadata_decides_first(tmp_path):
    path = _kohya(tmp_path / "sdxl_lightning_4step_lora.safetensors", rank=4, metadata={"lcmpack.kind": "dmd2"})
    lora = read_lora_file(path)
    assert lora.kind == "dmd2" and any("the pack's own metadata" in n for n in lora.notes)


def test_an_exported_mix_carries_its_accelerator_kind(tmp_path):
    sources = '[{"kind": "lcm", "role": "accelerator", "applied_weight": 1.0}, {"kind": "style", "applied_weight": 0.8}]'
    lora = read_lora_file(_kohya(tmp_path / "renamed_mix.safetensors", rank=4, metadata={"lcmpack.sources": sources}))
    assert lora.kind == "lcm"


@pytest.mark.parametrize("name", ["pytorch_lora_weights.safetensors", "papercut.safetensors"])
def test_a_style_lora_stays_style(tmp_path, name):
    lora = read_lora_file(_kohya(tmp_path / name, rank=8, targets="attention+ff"))
    assert lora.kind == "style"


def test_a_kohya_trained_locon_of_rank_64_stays_style(tmp_path):
    path = _kohya(tmp_path / "pytorch_lora_weights.safetensors", rank=64, targets="lcm-full",
                  metadata={"ss_network_module": "networks.lora", "ss_output_name": "watercolor"})
    assert read_lora_file(path).kind == "style"


def test_lcm_shaped_unet_plus_text_encoder_is_not_lcm_by_content(tmp_path):
    from lcm_lora_pack.devkit.loras import kohya_state_dict, text_encoder_state_dict

    tensors = kohya_state_dict(SD15_UNET_CONFIG, rank=64, targets="lcm-full") | text_encoder_state_dict(
        rank=64, layers=range(1))
    lora = read_lora_file(save_lora(tensors, tmp_path / "pytorch_lora_weights.safetensors"))
    assert lora.kind == "style"


def test_mixed_ranks_are_not_lcm_by_content(tmp_path):
    from lcm_lora_pack.devkit.loras import kohya_state_dict

    tensors = kohya_state_dict(SD15_UNET_CONFIG, rank=64, targets="lcm-full")
    tensors |= kohya_state_dict(SD15_UNET_CONFIG, rank=32, targets=(".proj_in.weight",))
    assert read_lora_file(save_lora(tensors, tmp_path / "pytorch_lora_weights.safetensors")).kind == "style"
