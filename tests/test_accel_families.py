"""The accelerators of the families beyond SD (FLUX.1, SD3, Qwen-Image, Wan) load on tiny models of their family
that ComfyUI's own detection recognises (devkit/family_models.py), through the pack's loader and mixer, and change
the weights exactly as core's ``LoraLoaderModelOnly`` of the same file at the same strength (issue 25).

Exceptions raised inside ComfyUI come from the pack's mangled module: compare them by class name.
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.devkit import family_loras, family_models, loras

LOADER = "LCMPack_LCMLoraLoader"
# (family, file name users have, key spelling, alpha, strength): the published accelerators and their layouts.
ACCELERATORS = {
    "hyper-flux": ("flux", "Hyper-FLUX.1-dev-8steps-lora.safetensors", "diffusers", None, 0.125),
    "flux-turbo-alpha": ("flux", "FLUX.1-Turbo-Alpha.safetensors", "diffusers", 16.0, 1.0),
    "hyper-sd3": ("sd3", "Hyper-SD3-8steps-CFG-lora.safetensors", "diffusers", None, 0.125),
    "qwen-image-lightning": ("qwen-image", "Qwen-Image-Lightning-8steps-V1.1.safetensors", "bare", 8.0, 1.0),
    "wan21-lightx2v": ("wan2.1", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
                       "diffusion_model", 4.0, 1.0),
    "wan22-lightning": ("wan2.2-high", "Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
                        "diffusion_model", 4.0, 1.0),
}
FAMILY_TITLES = {"flux": "FLUX.1", "sd3": "SD3", "qwen-image": "Qwen-Image", "wan2.1": "Wan 2.1 / Wan 2.2 A14B",
                 "wan2.2-high": "Wan 2.1 / Wan 2.2 A14B", "wan2.2-5b": "Wan 2.2 TI2V-5B"}


def _write(comfy, model, name: str, spelling: str, alpha, seed: int = 0, rank: int = 4) -> str:
    tensors = family_loras.family_lora_state_dict(model, spelling, rank=rank, alpha=alpha, seed=seed)
    return loras.save_lora(tensors, comfy.base / "models" / "loras" / name).name


def _weights(patcher) -> dict:
    """The patched weights of ``patcher`` (every patched key), as ComfyUI computes them when it loads the model."""
    from comfy.lora import calculate_weight

    base = patcher.model.state_dict()
    return {key: calculate_weight(patches, base[key].float().clone(), key) for key, patches in patcher.patches.items()}


def _error_of(call):
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value).__name__, str(caught.value)


@pytest.mark.parametrize("family", list(family_models.FAMILY_FILES))
def test_core_detects_each_tiny_family_model(comfy, family_model, family):
    """Core's UNETLoader detects each file as its family's model_config class (FLUX.1, SD3, Qwen-Image, Wan 2.1,
    Wan 2.2's A14B experts as Wan 2.1's architecture, Wan 2.2 TI2V-5B as WAN22_T2V)."""
    model = family_model(family)
    assert type(model.model.model_config).__name__ == family_models.FAMILY_CLASSES[family]
    assert any(key.startswith("diffusion_model.") for key in model.model.state_dict())


@pytest.mark.parametrize("kind", list(ACCELERATORS))
def test_accelerator_loads_like_core_lora_loader(comfy, family_model, kind):
    """The pack's loader patches the same keys to the same weights as core's LoraLoaderModelOnly (core's key map,
    incl. FLUX's split q/k/v onto slices of fused weights), and reports the kind, both families and the record's
    advice."""
    family, name, spelling, alpha, strength = ACCELERATORS[kind]
    model = family_model(family)
    name = _write(comfy, model, name, spelling, alpha, seed=7)
    ours, _, report = comfy.run_node(LOADER, model=model, lora_name=name, strength=strength, allow_partial=False)
    (core,) = comfy.run_node("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=strength)
    assert set(ours.patches) == set(core.patches) and ours.patches
    got, expected = _weights(ours), _weights(core)
    base = model.model.state_dict()
    for key, weight in expected.items():
        assert torch.equal(got[key], weight), key
        assert not torch.equal(weight, base[key].float()), key
    title = FAMILY_TITLES[family]
    for line in (f"Kind: {kind}", f"Family: LoRA {title}, model {title}", "modules (UNet"):
        assert line in report, report
    assert "Strength:" not in report, report  # applied at the authors' strength
    assert model.patches == {} and "lcm_lora_pack" not in model.model_options


def test_hyper_flux_at_strength_one_names_the_authors_strength(comfy, family_model):
    """The strength trap: a Hyper-FLUX LoRA at 1.0 is applied as asked (as core would) with a report line naming the
    card's 0.125."""
    _, name, spelling, alpha, _ = ACCELERATORS["hyper-flux"]
    model = family_model("flux")
    name = _write(comfy, model, name, spelling, alpha, seed=7)
    report = comfy.run_node(LOADER, model=model, lora_name=name, strength=1.0, allow_partial=False)[2]
    assert "Strength: the Hyper-FLUX recipe applies it at 0.125" in report and "applied at 1." in report, report


@pytest.mark.parametrize(("kind", "other"), [("hyper-sd3", "flux"), ("hyper-flux", "sd3"),
                                             ("wan21-lightx2v", "qwen-image"), ("wan22-lightning", "wan2.2-5b")])
def test_lora_of_one_family_on_another_is_refused(comfy, family_model, kind, other):
    """A family's accelerator on another family's model: ``LoraFamilyMismatch`` naming both, nothing patched."""
    family, name, spelling, alpha, strength = ACCELERATORS[kind]
    name = _write(comfy, family_model(family), name, spelling, alpha, seed=7)
    model = family_model(other)
    error, message = _error_of(lambda: comfy.run_node(LOADER, model=model, lora_name=name, strength=strength,
                                                      allow_partial=False))
    assert error == "LoraFamilyMismatch", message
    lora_title = "Wan 2.1 / Wan 2.2 A14B" if kind.startswith("wan") else FAMILY_TITLES[family]
    assert lora_title in message and f"the model is {FAMILY_TITLES[other]}" in message, message
    assert model.patches == {}


def test_mixer_applies_a_family_accelerator_with_a_style_like_chained_core_loaders(comfy, family_model):
    """LoRA Stack ×2 → LoRA Mixer on FLUX (Hyper-FLUX diffusers keys at 0.125 + a kohya-keyed style LoRA at 0.8):
    the weights of core's two chained LoraLoaderModelOnly (ΔW = Σ λᵢ ΔWᵢ, one mixed adapter per layer)."""
    _, accel, spelling, alpha, strength = ACCELERATORS["hyper-flux"]
    model = family_model("flux")
    accel = _write(comfy, model, accel, spelling, alpha, seed=7)
    style = _write(comfy, model, "flux-watercolor-kohya.safetensors", "kohya", 8.0, seed=8)
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=accel, weight=strength, role="accelerator")
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=style, weight=0.8, role="style", stack=stack)
    ours, _, report = comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack, style_normalization="none",
                                     allow_partial=False)
    (core,) = comfy.run_node("LoraLoaderModelOnly", model=model, lora_name=accel, strength_model=strength)
    (core,) = comfy.run_node("LoraLoaderModelOnly", model=core, lora_name=style, strength_model=0.8)
    got, expected = _weights(ours), _weights(core)
    assert got.keys() == expected.keys()
    for key, weight in expected.items():
        torch.testing.assert_close(got[key], weight, rtol=1e-5, atol=1e-6)
    assert "Applied 2 LoRAs" in report and "Kind: hyper-flux" in report, report


def _wan22_pair(comfy, family_model) -> tuple[str, str]:
    high_model = family_model("wan2.2-high")
    high = _write(comfy, high_model, "Wan2.2-Lightning_T2V-A14B-4steps-lora_HIGH_fp16.safetensors",
                  "diffusion_model", 4.0, seed=7)
    low = _write(comfy, high_model, "Wan2.2-Lightning_T2V-A14B-4steps-lora_LOW_fp16.safetensors",
                 "diffusion_model", 4.0, seed=9)
    return high, low


def _core_records_model_files(model) -> bool:
    """0.33's UNETLoader records the file a model came from (``cached_patcher_init``); 0.3.75's does not."""
    return getattr(model, "cached_patcher_init", None) is not None


def test_wan22_file_on_its_expert_reports_the_pairing(comfy, family_model):
    high, _ = _wan22_pair(comfy, family_model)
    model = family_model("wan2.2-high")
    report = comfy.run_node(LOADER, model=model, lora_name=high, strength=1.0, allow_partial=False)[2]
    assert f"Expert: '{high}' goes on the high-noise expert (Wan 2.2 Lightning card)" in report, report
    if _core_records_model_files(model):
        assert f"the model '{family_models.FAMILY_FILES['wan2.2-high']}' is that expert" in report, report
    else:
        assert "this ComfyUI does not record the model's file: make sure it is the high-noise model" in report


def test_wan22_file_on_the_other_expert_is_refused(comfy, family_model):
    """The swapped pair: the HIGH file on the model loaded from the low-noise file is refused, naming which file goes
    on which expert (where core records the model's file: 0.33; 0.3.75 loads it and the report says to check)."""
    high, _ = _wan22_pair(comfy, family_model)
    model = family_model("wan2.2-low")
    if not _core_records_model_files(model):
        report = comfy.run_node(LOADER, model=model, lora_name=high, strength=1.0, allow_partial=False)[2]
        assert "make sure it is the high-noise model" in report, report
        return
    error, message = _error_of(lambda: comfy.run_node(LOADER, model=model, lora_name=high, strength=1.0,
                                                      allow_partial=False))
    assert error == "LoraExpertMismatch", message
    assert (f"'{high}' is the high-noise file of Wan 2.2 Lightning, but the model "
            f"'{family_models.FAMILY_FILES['wan2.2-low']}' is the low-noise expert") in message, message
    assert model.patches == {}


def test_wan22_pair_on_one_model_is_refused(comfy, family_model):
    """Both files on one model -- in one mixer stack, or the second loader after the first -- are refused naming which
    file goes on which expert."""
    high, low = _wan22_pair(comfy, family_model)
    model = family_model("wan2.2-high")
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=high, weight=1.0, role="accelerator")
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=low, weight=1.0, role="accelerator", stack=stack)
    error, message = _error_of(lambda: comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack,
                                                      style_normalization="none", allow_partial=False))
    expected = f"'{high}' goes on the high-noise expert and '{low}' on the low-noise expert"
    assert error == "LoraExpertMismatch" and expected in message, message
    with_high = comfy.run_node(LOADER, model=model, lora_name=high, strength=1.0, allow_partial=False)[0]
    error, message = _error_of(lambda: comfy.run_node(LOADER, model=with_high, lora_name=low, strength=1.0,
                                                      allow_partial=False))
    assert error == "LoraExpertMismatch", message
    assert f"'{low}' goes on the low-noise expert and '{high}' on the high-noise expert" in message, message


def test_export_of_fused_weight_slices_is_refused_and_kohya_spelling_exports(comfy, family_model):
    """LoRA Export writes kohya modules: a FLUX LoRA in diffusers' spelling (q/k/v onto slices of the fused qkv) is
    refused naming why (never a file with layers silently missing); the same stack in kohya spelling exports, and the
    file core loads patches the same weights as the mixer (ΔW at 0.8)."""
    model = family_model("flux")
    accel = _write(comfy, model, "Hyper-FLUX.1-dev-8steps-lora.safetensors", "diffusers", None, seed=7)
    style = _write(comfy, model, "flux-watercolor-kohya.safetensors", "kohya", 8.0, seed=8)
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=accel, weight=0.125, role="accelerator")
    error, message = _error_of(lambda: comfy.run_node(
        "LCMPack_LoraExport", model=model, stack=stack, filename="flux-mix", mode="concat", rank=4, overwrite=True,
        save_dtype="fp32"))
    assert error == "ExportError" and "slices of fused weights" in message, message
    (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=style, weight=0.8, role="style")
    comfy.run_node("LCMPack_LoraExport", model=model, stack=stack, filename="flux-style-export", mode="concat", rank=4,
                   overwrite=True, save_dtype="fp32")
    mixed = comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack, style_normalization="none",
                           allow_partial=False)[0]
    (core,) = comfy.run_node("LoraLoaderModelOnly", model=model, lora_name="flux-style-export.safetensors",
                             strength_model=1.0)
    got, expected = _weights(core), _weights(mixed)
    assert got.keys() == expected.keys() and got
    for key, weight in expected.items():
        torch.testing.assert_close(got[key], weight, rtol=1e-5, atol=1e-6)


def test_model_file_name_contact_reads_only_cores_own_loaders(comfy, family_model):
    """``contract.model_file_name``: the file of a model core's UNETLoader loaded where core records it (0.33's
    ``cached_patcher_init``), None where it does not (0.3.75) or where the factory is not one of core's loaders (a
    custom loader's tuple is never guessed at); a clone carries it."""
    from lcm_lora_pack.host import contract

    model = family_model("wan2.2-high")
    name = contract.model_file_name(model.clone())
    if getattr(model, "cached_patcher_init", None) is None:
        assert name is None
        return
    assert name == family_models.FAMILY_FILES["wan2.2-high"]
    foreign = model.clone()
    foreign.cached_patcher_init = (lambda *a, **k: None, ("/somewhere/wan2.2_t2v_low_noise_14B.safetensors", {}))
    assert contract.model_file_name(foreign) is None
