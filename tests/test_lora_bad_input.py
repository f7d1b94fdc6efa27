"""Bad LoRA files: each gives a typed error naming the file and the fix; pickles are never executed."""
from __future__ import annotations

import pickle

import pytest
import torch
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.lora.errors import LoraFileError, LoraFormatError, LoraTensorError
from lcm_lora_pack.lora.io import read_lora_file

MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


@pytest.fixture(scope="module")
def good_tensors():
    return loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, alpha=2)


def _expect(error_type, path, *fragments):
    with pytest.raises(error_type) as caught:
        read_lora_file(path)
    message = str(caught.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_truncated_safetensors(tmp_path, good_tensors):
    full = loras.save_lora(good_tensors, tmp_path / "full.safetensors").read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(full[: len(full) // 2])
    _expect(LoraFileError, path, "truncated or corrupt", "download it again")


def test_corrupt_header(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    _expect(LoraFileError, path, "corrupt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _expect(LoraFileError, path, "empty", "download it again")


def test_safetensors_without_tensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "nothing.safetensors"
    save_file({}, str(path))
    _expect(LoraFileError, path, "no tensors")


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['EXPLOIT_MARK']).write_text('x')",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    mark = tmp_path / "executed"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    path = tmp_path / "evil-lora.ckpt"
    with open(path, "wb") as handle:
        pickle.dump({"lora_unet_x.lora_down.weight": _Exploit()}, handle)
    _expect(LoraFileError, path, "weights_only=True", "safetensors")
    assert not mark.exists(), "the pickle's payload ran"


def test_plain_tensor_pickle_loads_with_weights_only(tmp_path, good_tensors):
    path = tmp_path / "plain-lora.pt"
    torch.save(good_tensors, path)
    lora = read_lora_file(path)
    assert lora.family == "sd1.x" and len(lora.modules) == 40


def _with(good_tensors, **changes):
    tensors = dict(good_tensors)
    tensors.update(changes)
    return tensors


def test_rank_mismatch(tmp_path, good_tensors):
    tensors = _with(good_tensors, **{f"{MODULE}.lora_up.weight": torch.randn(320, 3)})
    path = loras.save_lora(tensors, tmp_path / "mismatch.safetensors")
    _expect(LoraTensorError, path, MODULE, "ranks differ")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_tensor(tmp_path, good_tensors, bad):
    down = good_tensors[f"{MODULE}.lora_down.weight"].clone()
    down[0, 0] = bad
    path = loras.save_lora(_with(good_tensors, **{f"{MODULE}.lora_down.weight": down}), tmp_path / "nan.safetensors")
    _expect(LoraTensorError, path, "NaN/Inf", MODULE)


def test_alpha_zero(tmp_path, good_tensors):
    path = loras.save_lora(_with(good_tensors, **{f"{MODULE}.alpha": torch.tensor(0.0)}), tmp_path / "a0.safetensors")
    _expect(LoraTensorError, path, "alpha 0.0", "> 0")


def test_missing_half(tmp_path, good_tensors):
    tensors = {k: v for k, v in good_tensors.items() if k != f"{MODULE}.lora_up.weight"}
    path = loras.save_lora(tensors, tmp_path / "half.safetensors")
    _expect(LoraTensorError, path, "no up tensor")


def test_unknown_architecture(tmp_path):
    """Module names of no family the pack or core's key map knows (an SD UNet, CLIP, FLUX.1, SD3, Qwen-Image, Wan)."""
    tensors = {"lora_unet_layers_0_attention_qkv.lora_down.weight": torch.randn(4, 2304),
               "lora_unet_layers_0_attention_qkv.lora_up.weight": torch.randn(6912, 4)}
    path = loras.save_lora(tensors, tmp_path / "lumina-style.safetensors")
    _expect(LoraFormatError, path, "unknown architecture", "FLUX.1/SD3/Qwen-Image/Wan")


@pytest.mark.parametrize(("name", "keys", "family", "kind"), [
    ("Hyper-FLUX.1-dev-8steps-lora.safetensors", ("lora_unet_double_blocks_0_img_attn_proj", ".lora_down.weight",
                                                  ".lora_up.weight"), "flux", "hyper-flux"),
    ("flux-style.safetensors", ("transformer.single_transformer_blocks.0.attn.to_q", ".lora_A.weight",
                                ".lora_B.weight"), "flux", "style"),
    ("Hyper-SD3-8steps-CFG-lora.safetensors", ("transformer.transformer_blocks.0.attn.add_q_proj", ".lora_A.weight",
                                               ".lora_B.weight"), "sd3", "hyper-sd3"),
    ("sd3-or-flux-style.safetensors", ("transformer.transformer_blocks.0.attn.add_q_proj", ".lora_A.weight",
                                       ".lora_B.weight"), "mmdit", "style"),
    ("Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors", ("diffusion_model.blocks.0.self_attn.q",
                                                                    ".lora_down.weight", ".lora_up.weight"),
     "wan", "wan22-lightning"),
    ("wan-style.safetensors", ("diffusion_model.blocks.0.self_attn.q", ".lora_down.weight", ".lora_up.weight"),
     "wan-any", "style"),
])
def test_a_transformer_family_lora_is_read_with_its_family_and_kind(tmp_path, name, keys, family, kind):
    """FLUX/SD3/Qwen/Wan LoRAs (issue 25) are read: the family from the module names (a group where names fit several
    families, narrowed by the kind's record: Hyper-SD3's diffusers keys are also FLUX's double blocks), the kind from
    the name."""
    module, down, up = keys
    path = loras.save_lora({module + down: torch.randn(4, 64), module + up: torch.randn(64, 4)}, tmp_path / name)
    lora = read_lora_file(path)
    assert (lora.family, lora.kind) == (family, kind), lora.notes


def test_a_family_accelerator_name_on_an_sd_lora_is_not_that_accelerator(tmp_path, good_tensors):
    """A Hyper-FLUX name on an SD1.x LoRA does not make it Hyper-FLUX (nor Hyper-SD, the next record)."""
    lora = read_lora_file(loras.save_lora(good_tensors, tmp_path / "Hyper-FLUX.1-dev-8steps-lora.safetensors"))
    assert lora.family == "sd1.x" and lora.kind == "style", lora.notes


def test_tensor_of_no_layout(tmp_path, good_tensors):
    path = loras.save_lora(_with(good_tensors, **{"model.diffusion_model.out.0.weight": torch.ones(4)}),
                           tmp_path / "checkpoint-not-lora.safetensors")
    _expect(LoraFormatError, path, "not part of any LoRA layout")


def test_a_kind_of_another_family_is_refused_on_the_loaders_kind_input(tmp_path, good_tensors):
    """kind=hyper-flux on an SD1.x LoRA (the loader's kind input) is refused naming both, as detection would not
    name it so; an SD kind stays allowed."""
    from lcm_lora_pack.lora.detect import with_kind

    lora = read_lora_file(loras.save_lora(good_tensors, tmp_path / "renamed.safetensors"))
    with pytest.raises(LoraFormatError, match=r"kind='hyper-flux' is Hyper-FLUX, for flux LoRAs; 'renamed.safetensors' "
                                              r"is a sd1.x LoRA"):
        with_kind(lora, "hyper-flux")
    assert with_kind(lora, "tcd").kind == "tcd"
