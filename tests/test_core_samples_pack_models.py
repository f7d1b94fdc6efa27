"""Core's own samplers on a model the pack loaded, through a real ComfyUI server (issue 29 item 1).

The pack's loaders change weights and the model-sampling object only. So core ``KSampler`` and ``SamplerCustom``
(any sampler) on ``LCM-LoRA Loader``'s model give exactly what they give on core ``LoraLoaderModelOnly`` of the
same file followed by the pack's ``LCM Model Sampling``; the same holds for ``LoRA Stack`` → ``LoRA Mixer`` against
chained core loaders, up to the float rounding of summing the LoRA deltas in another order. On ComfyUI 0.33 before
this fix both graphs of the pack failed (``prepare_state() missing 1 required positional argument``).
"""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import models
from lcm_lora_pack.devkit.loras import make_kohya_lora
from safetensors.torch import load_file

pytestmark = pytest.mark.server
LCM, STYLE = "core-lcm.safetensors", "core-style.safetensors"
LCM_SAMPLING = {"original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5}


@pytest.fixture(scope="module")
def server_loras(comfy_server):
    folder = comfy_server.base / "models" / "loras"
    make_kohya_lora(models.SD15_UNET_CONFIG, folder / LCM, rank=8, alpha=4.0, seed=31, kind="lcm")
    make_kohya_lora(models.SD15_UNET_CONFIG, folder / STYLE, rank=4, alpha=4.0, seed=32)
    return folder


def _base() -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def _core_lora_models(graph: dict) -> None:
    """``core_one``: core loader + the pack's LCM model sampling; ``core_mix``: two core loaders + the same."""
    graph["c_lcm"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["ckpt", 0], "lora_name": LCM, "strength_model": 1.0}}
    graph["c_style"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["c_lcm", 0], "lora_name": STYLE, "strength_model": 0.8}}
    for name, source in (("core_one", "c_lcm"), ("core_mix", "c_style")):
        graph[name] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {"model": [source, 0], **LCM_SAMPLING}}


def _pack_models(graph: dict) -> None:
    """``pack_one``: the pack's LCM-LoRA loader; ``pack_mix``: LoRA Stack ×2 → LoRA Mixer."""
    graph["pack_one"] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
        "model": ["ckpt", 0], "lora_name": LCM, "strength": 1.0, "allow_partial": False}}
    graph["s1"] = {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": LCM, "weight": 1.0,
                                                                 "role": "accelerator"}}
    graph["s2"] = {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": STYLE, "weight": 0.8, "role": "style",
                                                                 "stack": ["s1", 0]}}
    graph["pack_mix"] = {"class_type": "LCMPack_LoraMixer", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "stack": ["s2", 0], "style_normalization": "none",
        "allow_partial": False}}


def _ksampler(graph: dict, model: str, cfg: float) -> None:
    graph[f"ks_{model}"] = {"class_type": "KSampler", "inputs": {
        "model": [model, 0], "seed": 7, "steps": 4, "cfg": cfg, "sampler_name": "lcm", "scheduler": "sgm_uniform",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    graph[f"save_ks_{model}"] = {"class_type": "SaveLatent", "inputs": {
        "samples": [f"ks_{model}", 0], "filename_prefix": f"core_{model}_ks"}}


def _sampler_custom(graph: dict, model: str, sampler: str) -> None:
    graph[f"sel_{sampler}"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    graph[f"sig_{model}"] = {"class_type": "BasicScheduler", "inputs": {
        "model": [model, 0], "scheduler": "simple", "steps": 3, "denoise": 1.0}}
    graph[f"sc_{model}_{sampler}"] = {"class_type": "SamplerCustom", "inputs": {
        "model": [model, 0], "add_noise": True, "noise_seed": 3, "cfg": 1.5, "positive": ["pos", 0],
        "negative": ["neg", 0], "sampler": [f"sel_{sampler}", 0], "sigmas": [f"sig_{model}", 0],
        "latent_image": ["latent", 0]}}
    graph[f"save_sc_{model}_{sampler}"] = {"class_type": "SaveLatent", "inputs": {
        "samples": [f"sc_{model}_{sampler}", 0], "filename_prefix": f"core_{model}_{sampler}"}}


def _latents(server, graph: dict) -> dict[str, torch.Tensor]:
    status, answer = server.post_prompt(graph)
    assert status == 200, answer
    history = server.wait_history(answer["prompt_id"], timeout=900)
    assert history["status"]["status_str"] == "success", history["status"]
    out = {}
    for node_id, output in history["outputs"].items():
        if "latents" not in output:  # the pack's nodes also show their report
            continue
        (entry,) = output["latents"]
        path = server.base / "output" / entry["subfolder"] / entry["filename"]
        out[node_id.removeprefix("save_")] = load_file(str(path))["latent_tensor"]
    return out


def test_core_samplers_on_pack_loaded_models_equal_core_lora_loading(comfy_server, server_loras):
    graph = _base()
    _core_lora_models(graph)
    _pack_models(graph)
    for model in ("core_one", "pack_one", "core_mix", "pack_mix"):
        _ksampler(graph, model, cfg=1.0 if model.endswith("one") else 1.5)
        _sampler_custom(graph, model, "euler")
    _sampler_custom(graph, "pack_one", "dpmpp_2m")
    _sampler_custom(graph, "core_one", "dpmpp_2m")
    latents = _latents(comfy_server, graph)
    for route in ("ks_{}", "sc_{}_euler"):
        assert torch.equal(latents[route.format("pack_one")], latents[route.format("core_one")]), route
        mixed, chained = latents[route.format("pack_mix")], latents[route.format("core_mix")]
        assert (mixed - chained).abs().max() <= 1e-4 * chained.abs().max(), route
        assert not torch.equal(latents[route.format("pack_one")], mixed), "the style LoRA had no effect"
    assert torch.equal(latents["sc_pack_one_dpmpp_2m"], latents["sc_core_one_dpmpp_2m"])
