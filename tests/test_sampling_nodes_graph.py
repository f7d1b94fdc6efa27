"""The sampling nodes in real ComfyUI graphs (validated and run by the in-process PromptExecutor)."""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit.host import PromptFailed
from safetensors.torch import load_file

LCM_PATCH = {"original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5}


def _base_graph():
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def _ksampler_lcm(latent, denoise=1.0, sampler="lcm", gamma=0.3, steps=4, seed=7, cfg=1.0, model=("ckpt", 0)):
    return {"class_type": "LCMPack_KSamplerLCM", "inputs": {
        "model": list(model), "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": list(latent),
        "seed": seed, "steps": steps, "cfg": cfg, "sampler": sampler, "gamma": gamma, "denoise": denoise}}


def _save_image(latent, prefix):
    return {"decode_" + prefix: {"class_type": "VAEDecode", "inputs": {"samples": list(latent), "vae": ["ckpt", 2]}},
            "save_" + prefix: {"class_type": "SaveImage", "inputs": {"images": ["decode_" + prefix, 0],
                                                                     "filename_prefix": prefix}}}


def _saved_latent(comfy, outputs, node):
    entry = outputs[node]["latents"][0]
    return load_file(str(comfy.base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def test_one_node_ksampler_txt2img_then_img2img(comfy):
    graph = _base_graph()
    graph["txt2img"] = _ksampler_lcm(("empty", 0))
    graph.update(_save_image(("txt2img", 0), "lcm_txt2img"))
    graph["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["decode_lcm_txt2img", 0], "vae": ["ckpt", 2]}}
    graph["img2img"] = _ksampler_lcm(("encode", 0), denoise=0.5, cfg=1.5)
    graph.update(_save_image(("img2img", 0), "lcm_img2img"))
    outputs = comfy.run_prompt(graph)
    for prefix in ("lcm_txt2img", "lcm_img2img"):
        image = outputs["save_" + prefix]["images"][0]
        assert (comfy.base / "output" / image["filename"]).stat().st_size > 0


@pytest.mark.parametrize("sampler, gamma", [("lcm", 0.3), ("tcd", 0.3)])
def test_custom_sampler_graph_equals_the_one_node_ksampler_for_img2img(comfy, sampler, gamma):
    """SamplerCustom + pack sampler + pack scheduler (+ LCM patch for lcm) == KSamplerLCM, at denoise 0.5."""
    graph = _base_graph()
    graph["start"] = _ksampler_lcm(("empty", 0), steps=2)
    graph["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["start", 0], "vae": ["ckpt", 2]}}
    graph["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["decode", 0], "vae": ["ckpt", 2]}}
    model_ref = ["ckpt", 0]
    if sampler == "lcm":
        graph["patch"] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {"model": ["ckpt", 0], **LCM_PATCH}}
        model_ref = ["patch", 0]
    graph["sampler"] = {"class_type": "LCMPack_LCMSampler", "inputs": {"sampler": sampler, "gamma": gamma}}
    graph["sigmas"] = {"class_type": "LCMPack_LCMScheduler", "inputs": {
        "model": model_ref, "steps": 4, "denoise": 0.5, "original_inference_steps": 0}}
    graph["custom"] = {"class_type": "SamplerCustom", "inputs": {
        "model": model_ref, "add_noise": True, "noise_seed": 11, "cfg": 1.0, "positive": ["pos", 0],
        "negative": ["neg", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0], "latent_image": ["encode", 0]}}
    graph["one_node"] = _ksampler_lcm(("encode", 0), denoise=0.5, sampler=sampler, gamma=gamma, seed=11)
    for name in ("custom", "one_node"):
        graph["save_" + name] = {"class_type": "SaveLatent", "inputs": {
            "samples": [name, 0], "filename_prefix": f"latents/{sampler}_{name}"}}
    outputs = comfy.run_prompt(graph)
    custom, one_node = _saved_latent(comfy, outputs, "save_custom"), _saved_latent(comfy, outputs, "save_one_node")
    start = _saved_latent(comfy, comfy.run_prompt({**_base_graph(), "start": graph["start"], "save": {
        "class_type": "SaveLatent", "inputs": {"samples": ["start", 0], "filename_prefix": "latents/start"}}}), "save")
    assert torch.isfinite(custom).all()
    assert torch.equal(custom, one_node)
    assert not torch.allclose(custom, start)


def _node_error_details(comfy, graph, node):
    ok, error, outputs, node_errors = comfy.validate(graph)
    assert node in node_errors, (error, node_errors)
    return " ".join(e.get("details", "") + " " + e.get("message", "") for e in node_errors[node]["errors"])


@pytest.mark.parametrize("inputs, expected", [
    ({"gamma": 1.5}, "gamma=1.5 is outside [0, 1]"),
    ({"gamma": -0.1}, "gamma=-0.1 is outside [0, 1]"),
    ({"steps": 0}, "steps=0 must be at least 1"),
    ({"denoise": 0.0}, "denoise=0.0 must be in (0, 1]"),
])
def test_ksampler_bad_inputs_fail_validation(comfy, inputs, expected):
    graph = _base_graph()
    graph["sample"] = _ksampler_lcm(("empty", 0))
    graph["sample"]["inputs"].update(inputs)
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "x"}}
    assert expected in _node_error_details(comfy, graph, "sample")


@pytest.mark.parametrize("inputs, expected", [
    ({"steps": 60, "original_inference_steps": 50}, "steps=60 exceeds the 50 timesteps"),
    ({"steps": 4, "denoise": 0.05, "original_inference_steps": 50}, "lower steps to ≤ 2 or raise denoise"),
    ({"steps": 1, "denoise": 0.01, "original_inference_steps": 50}, "leaves no LCM step"),
    ({"custom_timesteps": "999, 999, 499"}, "strictly descending"),
    ({"custom_timesteps": "1200, 499"}, "outside 0..999"),
    ({"custom_timesteps": "999, x"}, "must be integers"),
    ({"original_inference_steps": 2000}, "outside 0..1000"),
])
def test_scheduler_bad_inputs_fail_validation(comfy, inputs, expected):
    graph = _base_graph()
    graph["sigmas"] = {"class_type": "LCMPack_LCMScheduler", "inputs": {
        "model": ["ckpt", 0], "steps": 4, "denoise": 1.0, "original_inference_steps": 0, **inputs}}
    graph["sampler"] = {"class_type": "LCMPack_LCMSampler", "inputs": {"sampler": "lcm", "gamma": 0.3}}
    graph["custom"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["ckpt", 0], "add_noise": True, "noise_seed": 1, "cfg": 1.0, "positive": ["pos", 0],
        "negative": ["neg", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0], "latent_image": ["empty", 0]}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["custom", 0], "filename_prefix": "x"}}
    assert expected in _node_error_details(comfy, graph, "sigmas")


def test_too_low_denoise_on_the_model_grid_fails_fast_instead_of_hanging(comfy):
    """With the grid taken from the model (known only at run time) the error comes from execution."""
    graph = _base_graph()
    graph["sample"] = _ksampler_lcm(("empty", 0), denoise=0.01)
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "x"}}
    with pytest.raises(PromptFailed):
        comfy.run_prompt(graph)
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]
    with pytest.raises(ValueError, match=r"leaves no LCM step.*Raise denoise to at least 0.02"):
        comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=[], negative=[],
                       latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=0, steps=4, cfg=1.0, sampler="lcm",
                       gamma=0.3, denoise=0.01)
