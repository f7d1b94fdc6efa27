"""Parity: the pack's patched ComfyUI weights equal PEFT ``merge_and_unload`` / diffusers ``fuse_lora``.

One random SD1.5-shaped UNet is moved both ways (ComfyUI LDM names ↔ diffusers names via
``comfy.utils.unet_to_diffusers``). A PEFT LoRA (rank 8, ``lora_alpha`` 3 ≠ rank, random non-zero B) is
attached with PEFT's ``get_peft_model`` on the diffusers UNet; the same update is written in each format
with the real tools (PEFT ``save_pretrained``, diffusers ``save_lora_weights`` with adapter metadata,
diffusers ``convert_state_dict_to_kohya``) and applied by the pack through ComfyUI core's patcher.
"""
from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.host.comfy_apply import apply_lora
from lcm_lora_pack.lora.io import read_lora_file

LOG = logging.getLogger(__name__)
RANK, ALPHA = 8, 3.0
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "time_emb_proj"]
WEIGHT_RTOL = 1e-6  # the bound, on ‖W_comfy − W_ref‖ / ‖W_ref‖
DELTA_RTOL = 1e-5  # the update alone, ‖ΔW_comfy − ΔW_ref‖ / ‖ΔW_ref‖ (W dominates the first bound)


def _diffusers_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=32, block_out_channels=(320,), layers_per_block=1,
                                down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
                                cross_attention_dim=768, attention_head_dim=8)


@pytest.fixture(scope="module")
def setup(comfy, tmp_path_factory):
    """ComfyUI model, the diffusers twin, a PEFT model with a LoRA, and its merged reference weights."""
    from comfy.utils import unet_to_diffusers
    from peft import LoraConfig, get_peft_model

    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    ldm = model.model.diffusion_model.state_dict()
    diffusers_to_ldm = {d: ldm_key for d, ldm_key in unet_to_diffusers(SD15_UNET_CONFIG).items() if ldm_key in ldm}
    unet = _diffusers_unet()
    unet.load_state_dict({d: ldm[ldm_key] for d, ldm_key in diffusers_to_ldm.items()}, strict=True)
    torch.manual_seed(7)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(unet, config)
    merged = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    return {"model": model, "peft": peft_model, "config": config, "merged": merged,
            "diffusers_to_ldm": diffusers_to_ldm, "dir": tmp_path_factory.mktemp("parity-loras")}


def _bare_peft_state_dict(peft_model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    return {k.removeprefix("base_model.model."): v.contiguous() for k, v in state.items()}


def _comfy_weights(model, lora_path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply with the pack, let ComfyUI core patch the weights, read them (LDM names), unpatch."""
    result = apply_lora(model, None, read_lora_file(lora_path))
    patched = result.model
    patched.patch_model()
    try:
        weights = {k: v.detach().clone() for k, v in patched.model.diffusion_model.state_dict().items()}
    finally:
        patched.unpatch_model()
    return weights, sorted(k.removeprefix("diffusion_model.") for k in patched.patches)


def _assert_parity(setup, comfy_weights, patched_keys, reference):
    ldm_to_diffusers = {ldm_key: d for d, ldm_key in setup["diffusers_to_ldm"].items()}
    base = {k: v for k, v in setup["model"].model.diffusion_model.state_dict().items()}
    # 4 transformer blocks × (2 attentions × q,k,v,out + ff.net.2) + 4 stacks × (proj_in, proj_out)
    # + 5 resnets × (3x3 conv1, time_emb_proj)
    assert len(patched_keys) == 4 * 9 + 4 * 2 + 5 * 2
    worst_weight, worst_delta = 0.0, 0.0
    for key in patched_keys:
        ref = reference[ldm_to_diffusers[key]].reshape(base[key].shape)
        ours = comfy_weights[key]
        worst_weight = max(worst_weight, float((ours - ref).norm() / ref.norm()))
        ref_delta, our_delta = ref - base[key], ours - base[key]
        assert ref_delta.norm() > 1e-3 * base[key].norm(), f"{key}: reference update is negligible"
        worst_delta = max(worst_delta, float((our_delta - ref_delta).norm() / ref_delta.norm()))
    LOG.info("parity: worst weight rel %.2e, worst update rel %.2e over %d weights", worst_weight, worst_delta,
             len(patched_keys))
    assert worst_weight <= WEIGHT_RTOL, worst_weight
    assert worst_delta <= DELTA_RTOL, worst_delta
    untouched = [k for k in base if k not in patched_keys]
    assert all(torch.equal(comfy_weights[k], base[k]) for k in untouched)


def test_peft_save_pretrained_base_model_prefix(setup):
    """PEFT ``save_pretrained``: ``base_model.model.…lora_A.weight`` + ``adapter_config.json`` (alpha 3)."""
    folder = setup["dir"] / "peft"
    setup["peft"].save_pretrained(str(folder))
    weights, keys = _comfy_weights(setup["model"], folder / "adapter_model.safetensors")
    _assert_parity(setup, weights, keys, setup["merged"])


def test_diffusers_unet_prefix_with_adapter_metadata(setup):
    """diffusers ``save_lora_weights``: ``unet.…lora_A.weight`` + ``lora_adapter_metadata`` (alpha 3)."""
    from diffusers import StableDiffusionPipeline

    folder = setup["dir"] / "diffusers"
    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=_bare_peft_state_dict(setup["peft"]),
                                              unet_lora_adapter_metadata=setup["config"].to_dict())
    weights, keys = _comfy_weights(setup["model"], folder / "pytorch_lora_weights.safetensors")
    _assert_parity(setup, weights, keys, setup["merged"])


def _kohya_state_dict(setup, alpha: float) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_kohya

    state = {f"unet.{k}": v for k, v in _bare_peft_state_dict(setup["peft"]).items()}
    kohya = convert_state_dict_to_kohya(state)
    return {k: (torch.tensor(alpha) if k.endswith(".alpha") else v.contiguous()) for k, v in kohya.items()}


def _diffusers_fused(path, base_unet) -> dict[str, torch.Tensor]:
    """diffusers' own reading of a kohya file (``lora_state_dict`` → ``load_lora_into_unet`` → ``fuse_lora``)."""
    from diffusers import StableDiffusionPipeline

    state, network_alphas = StableDiffusionPipeline.lora_state_dict(str(path))
    unet = copy.deepcopy(base_unet)
    StableDiffusionPipeline.load_lora_into_unet(state, network_alphas, unet=unet)
    unet.fuse_lora()
    unet.unload_lora()
    return unet.state_dict()


@pytest.fixture(scope="module")
def base_unet(setup):
    """The diffusers UNet with the base weights only (no adapter), for diffusers' own LoRA loading."""
    unet = _diffusers_unet()
    base = setup["model"].model.diffusion_model.state_dict()
    unet.load_state_dict({d: base[ldm_key] for d, ldm_key in setup["diffusers_to_ldm"].items()}, strict=True)
    return unet


@pytest.mark.parametrize("alpha", [ALPHA, float(RANK)], ids=["alpha3", "alpha=rank"])
def test_diffusers_kohya_conversion_matches_peft_and_fuse_lora(setup, base_unet, alpha):
    """diffusers ``convert_state_dict_to_kohya`` (``lora_unet_<diffusers name>``, ``.alpha``)."""
    from lcm_lora_pack.devkit.loras import save_lora

    path = save_lora(_kohya_state_dict(setup, alpha), setup["dir"] / f"kohya-{alpha:g}.safetensors")
    weights, keys = _comfy_weights(setup["model"], path)
    _assert_parity(setup, weights, keys, _diffusers_fused(path, base_unet))
    if alpha == ALPHA:
        _assert_parity(setup, weights, keys, setup["merged"])


def test_kohya_ldm_names_with_alpha(setup):
    """kohya keys in LDM spelling (``lora_unet_input_blocks_1_1_…``) with ``.alpha`` 3 ≠ rank 8."""
    from lcm_lora_pack.devkit.loras import save_lora

    to_ldm = {d[: -len(".weight")].replace(".", "_"): ldm_key[: -len(".weight")].replace(".", "_")
              for d, ldm_key in setup["diffusers_to_ldm"].items() if d.endswith(".weight")}
    renamed = {}
    for key, tensor in _kohya_state_dict(setup, ALPHA).items():
        module, _, suffix = key.partition(".")
        renamed[f"lora_unet_{to_ldm[module.removeprefix('lora_unet_')]}.{suffix}"] = tensor
    path = save_lora(renamed, setup["dir"] / "kohya-ldm.safetensors")
    weights, keys = _comfy_weights(setup["model"], path)
    _assert_parity(setup, weights, keys, setup["merged"])
