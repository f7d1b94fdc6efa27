"""Real graph execution through the harness on a generated SD1.5-family checkpoint (issue 2 base)."""
from __future__ import annotations

import torch
from conftest import SD15_CKPT


def _txt2img_prompt(model_ref, seed=1, steps=2):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model_ref, "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "lcm",
            "scheduler": "simple", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "harness"}},
    }


def test_generated_checkpoint_is_detected_as_sd15(comfy):
    model, clip, vae = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    assert clip is not None and vae is not None


def test_generated_vega_unet_is_detected_as_sdxl_family(comfy):
    from conftest import VEGA_UNET

    (model,) = comfy.run_node("UNETLoader", unet_name=VEGA_UNET, weight_dtype="default")
    assert type(model.model.model_config).__name__ == "Segmind_Vega"


def test_pack_node_runs_in_a_real_graph(comfy):
    prompt = _txt2img_prompt(["lcm", 0])
    prompt["lcm"] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {
        "model": ["ckpt", 0], "original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5}}
    outputs = comfy.run_prompt(prompt)
    images = outputs["save"]["images"]
    assert len(images) == 1 and images[0]["filename"].startswith("harness")
    assert (comfy.base / "output" / images[0]["filename"]).stat().st_size > 0


def test_pack_sampling_matches_core_lcm_path(comfy):
    """The pack's LCM patch and core's ModelSamplingDiscrete(lcm) agree to the documented 7e-6."""
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    (ours,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=model, original_inference_steps=50,
                             timestep_scaling=10.0, sigma_data=0.5)
    (core,) = comfy.run_node("ModelSamplingDiscrete", model=model, sampling="lcm", zsnr=False)
    a, b = ours.get_model_object("model_sampling"), core.get_model_object("model_sampling")
    assert torch.allclose(a.sigmas, b.sigmas)
    sigma = a.sigmas[[-1, 30, 10]]
    x = torch.randn(3, 4, 8, 8)
    eps = torch.randn(3, 4, 8, 8)
    da, db = a.calculate_denoised(sigma, eps, x), b.calculate_denoised(sigma, eps, x)
    assert torch.allclose(da, db, rtol=1e-4, atol=1e-4)
    assert model.get_model_object("model_sampling") is not a, "input model was mutated"
