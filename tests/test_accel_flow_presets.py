"""KSampler (LCM) presets of the families beyond SD (issue 25 item 3): on preset auto, a FLUX.1 / SD3 / Qwen-Image /
Wan 2.1 model carrying its accelerator (applied by the pack's loader) is sampled exactly as core's KSampler samples
the registry's recipe (euler, the recipe's scheduler and steps, cfg, and core's ModelSamplingAuraFlow for a shift);
tests/test_accel_family_parity.py shows that recipe is the authors' diffusers setup. Real ComfyUI, tiny models core
detects as each family (devkit/family_models.py).
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.devkit import family_loras, loras

KSAMPLER = "LCMPack_KSamplerLCM"
# kind: (model, LoRA file, spelling, strength, core scheduler, steps, cfg, shift, text width, pooled width)
CASES = {
    "hyper-flux": ("flux", "Hyper-FLUX.1-dev-8steps-lora.safetensors", "diffusers", 0.125, "simple", 8, 1.0, None,
                   64, 32),
    "hyper-sd3": ("sd3", "Hyper-SD3-8steps-CFG-lora.safetensors", "diffusers", 0.125, "normal", 8, 5.0, None, 64, 32),
    "qwen-image-lightning": ("qwen-image", "Qwen-Image-Lightning-4steps-V1.0.safetensors", "bare", 1.0, "simple", 4,
                             1.0, 3.0, 3584, None),
    "wan21-lightx2v": ("wan2.1", "Wan21_T2V_14B_lightx2v_cfg_step_distill_lora_rank32.safetensors",
                       "diffusion_model", 1.0, "simple", 4, 1.0, None, 4096, None),
}


def _conditioning(text_width: int, pooled_width: int | None, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    extra = {} if pooled_width is None else {"pooled_output": torch.randn(1, pooled_width, generator=generator)}
    return [[torch.randn(1, 4, text_width, generator=generator), extra]]


def _accelerated(comfy, family_model, kind: str):
    family, name, spelling, strength, *_ = CASES[kind]
    model = family_model(family)
    tensors = family_loras.family_lora_state_dict(model, spelling, rank=4, alpha=4.0, seed=5)
    name = loras.save_lora(tensors, comfy.base / "models" / "loras" / name).name
    return comfy.run_node("LCMPack_LCMLoraLoader", model=model, lora_name=name, strength=strength,
                          allow_partial=False)[0]


@pytest.mark.parametrize("kind", list(CASES))
def test_preset_auto_samples_as_core_ksampler_samples_the_recipe(comfy, family_model, kind):
    family, _, _, _, scheduler, steps, cfg, shift, text_width, pooled_width = CASES[kind]
    model = _accelerated(comfy, family_model, kind)
    positive, negative = _conditioning(text_width, pooled_width, 1), _conditioning(text_width, pooled_width, 2)
    shape = (1, 16, 1, 8, 8) if family.startswith("wan") else (1, 16, 8, 8)
    latent = {"samples": torch.zeros(shape)}
    (ours,) = comfy.run_node(KSAMPLER, model=model, positive=positive, negative=negative, latent_image=latent,
                             seed=3, steps=4, cfg=1.0, sampler="lcm", gamma=0.3, denoise=1.0, preset="auto")
    core_model = model if shift is None else comfy.run_node("ModelSamplingAuraFlow", model=model, shift=shift)[0]
    (core,) = comfy.run_node("KSampler", model=core_model, seed=3, steps=steps, cfg=cfg, sampler_name="euler",
                             scheduler=scheduler, positive=positive, negative=negative, latent_image=latent,
                             denoise=1.0)
    assert ours["samples"].shape == core["samples"].shape
    assert torch.isfinite(ours["samples"]).all() and not torch.equal(ours["samples"], latent["samples"])
    torch.testing.assert_close(ours["samples"], core["samples"], rtol=1e-5, atol=1e-6)


def test_a_flow_preset_on_an_sd_model_or_another_family_is_refused(comfy, family_model):
    """An explicit family preset on another family's model: ``PresetError`` naming both."""
    model = family_model("sd3")
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    cond = _conditioning(64, 32, 1)
    with pytest.raises(Exception) as caught:
        comfy.run_node(KSAMPLER, model=model, positive=cond, negative=cond, latent_image=latent, seed=3, steps=4,
                       cfg=1.0, sampler="lcm", gamma=0.3, denoise=1.0, preset="hyper-flux")
    assert type(caught.value).__name__ == "PresetError"
    assert "Hyper-FLUX on FLUX.1 models; this model is SD3" in str(caught.value), str(caught.value)
