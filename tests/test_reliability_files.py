"""Reliability of the LoRA reader (issue 18, bugs 1 and 5): the format is decided by parsing, not by one byte,
and rank-0 modules are refused when the file is read, naming the module."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.lora.errors import LoraFileError, LoraTensorError
from lcm_lora_pack.lora.io import read_lora_file

PEFT_METADATA = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 2})}
LCM_METADATA = loras.kind_metadata("lcm")  # the LCM kind is known only from the metadata (neutral file name)
MODULE = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"


def _peft_tensors(seed: int = 3) -> dict[str, torch.Tensor]:
    """SD1.5 attention LoRA in diffusers' PEFT spelling ``unet.<module>.lora_A/lora_B.weight`` (rank 4)."""
    from comfy.utils import unet_to_diffusers

    dotted = {d[: -len(".weight")].replace(".", "_"): d[: -len(".weight")]
              for d in unet_to_diffusers(SD15_UNET_CONFIG) if d.endswith(".weight")}
    out = {}
    for key, tensor in loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, seed=seed).items():
        module, _, suffix = key.partition(".")
        if suffix != "alpha":
            half = "A" if "down" in suffix else "B"
            out[f"unet.{dotted[module.removeprefix('lora_unet_')]}.lora_{half}.weight"] = tensor
    return out


def _header_length(path) -> int:
    with open(path, "rb") as handle:
        return int.from_bytes(handle.read(8), "little")


def save_with_header_length_128_mod_256(tensors, path, metadata):
    """A real safetensors file (written by ``safetensors``) whose header length ≡ 128 (mod 256), so that its
    first byte is 0x80 (the pickle protocol opcode): metadata padding is grown until the writer's header is so."""
    for pad in range(0, 512, 8):  # the writer pads the header to a multiple of 8 itself
        loras.save_lora(tensors, path, {**metadata, "padding": "x" * pad})
        if _header_length(path) % 256 == 128:
            assert path.read_bytes()[:1] == b"\x80"
            return path
    raise AssertionError("no padding gave a header length of 128 mod 256")


def test_safetensors_with_first_byte_0x80_keeps_kind_and_peft_alpha(comfy, tmp_path):  # comfy: key names
    path = save_with_header_length_128_mod_256(_peft_tensors(), tmp_path / "accel.safetensors",
                                               {**LCM_METADATA, **PEFT_METADATA})
    lora = read_lora_file(path)
    assert lora.metadata["modelspec.title"] == LCM_METADATA["modelspec.title"]
    assert (lora.format, lora.family, lora.kind) == ("peft", "sd1.x", "lcm")
    assert {m.alpha for m in lora.modules.values()} == {2.0}
    assert {m.scale for m in lora.modules.values()} == {0.5}


def test_loader_treats_the_0x80_file_as_the_lcm_lora_its_metadata_names(comfy):
    name = "rel-0x80-accel.safetensors"
    save_with_header_length_128_mod_256(_peft_tensors(), comfy.base / "models" / "loras" / name,
                                        {**LCM_METADATA, **PEFT_METADATA})
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    patched, _, report = comfy.run_node("LCMPack_LCMLoraLoader", model=model, lora_name=name, strength=1.0,
                                        allow_partial=False)
    assert "Kind: lcm" in report and "lora_adapter_metadata" in report, report
    assert "model_sampling" in patched.object_patches


class _NotATensor:
    """An object torch.load(weights_only=True) refuses to rebuild."""


def test_pickle_with_a_safetensors_suffix_is_still_refused_without_unpickling(tmp_path):
    """Parsing first does not open a way around weights_only: a torch pickle named .safetensors is loaded only
    with torch.load(weights_only=True), so plain tensors load and anything else is refused."""
    tensors = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=2)
    path = tmp_path / "renamed.safetensors"
    torch.save(tensors, path)
    assert len(read_lora_file(path).modules) == 40
    torch.save({"x": _NotATensor()}, path)
    with pytest.raises(LoraFileError, match="weights_only=True"):
        read_lora_file(path)


@pytest.mark.parametrize("shape_of", [
    lambda down, up: (down[:0], up[:, :0]),          # rank 0
    lambda down, up: (down[:, :0], up),              # no input features
], ids=["rank-0", "zero-in-features"])
def test_rank_zero_module_is_refused_at_read_time(tmp_path, shape_of):
    tensors = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, alpha=2)
    down, up = shape_of(tensors[f"{MODULE}.lora_down.weight"], tensors[f"{MODULE}.lora_up.weight"])
    tensors[f"{MODULE}.lora_down.weight"], tensors[f"{MODULE}.lora_up.weight"] = down.contiguous(), up.contiguous()
    path = loras.save_lora(tensors, tmp_path / "rank0.safetensors")
    with pytest.raises(LoraTensorError) as caught:
        read_lora_file(path)
    message = str(caught.value)
    assert "rank0.safetensors" in message and MODULE in message and "empty update" in message


def test_rank_zero_lora_is_refused_by_the_loader_node(comfy):
    name = "rel-rank0.safetensors"
    tensors = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, alpha=2)
    tensors[f"{MODULE}.lora_down.weight"] = tensors[f"{MODULE}.lora_down.weight"][:0].contiguous()
    tensors[f"{MODULE}.lora_up.weight"] = tensors[f"{MODULE}.lora_up.weight"][:, :0].contiguous()
    loras.save_lora(tensors, comfy.base / "models" / "loras" / name)
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    with pytest.raises(Exception) as caught:
        comfy.run_node("LCMPack_LCMLoraLoader", model=model, lora_name=name, strength=1.0, allow_partial=False)
    assert type(caught.value).__name__ == "LoraTensorError" and MODULE in str(caught.value)
