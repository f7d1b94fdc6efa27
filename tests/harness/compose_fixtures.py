"""Fixtures and graph builders for the composition tests (issue 24, issue 29 items 4-5): one real ComfyUI server
(127.0.0.1) with the pack, the test-only nodes, the tiny SD1.5 checkpoint, a tiny ControlNet and inpainting
checkpoint of its family (``devkit/compose_models.py``), an LCM-LoRA and a style LoRA, and input images.

Graphs are API prompts (dicts); every graph ends in ``SaveLatent`` nodes whose files the test reads back, so
outputs are compared as latents (exact), not as 8-bit images.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from lcm_lora_pack.devkit import compose_models, workflows
from lcm_lora_pack.devkit.loras import kohya_state_dict, make_kohya_lora, save_lora
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.devkit.server import ComfyServer
from safetensors.torch import load_file

CKPT = "tiny-sd15.safetensors"
INPAINT_CKPT = "tiny-sd15-inpainting.safetensors"
CONTROLNET = "tiny-controlnet-sd15.safetensors"
LCM_LORA = "lcm-lora-sdv1-5.safetensors"
STYLE_LORA = "style-sd15.safetensors"
HOOK_LORA = "hook-style-sd15.safetensors"
CONTROL_IMAGE = "control.png"
MASK_IMAGE = "mask.png"
SIZE = 64  # pixels; latents are 8x8
LORA_ROUTES = ("loader", "mixer")
WAIT_S = 900

_SHARED: dict[str, object] = {}


def _write_images(input_dir: Path) -> None:
    """A control hint (white disc on black, the kind of map a ControlNet reads) and an inpainting mask (the
    right half of the image, red channel)."""
    from PIL import Image, ImageDraw

    input_dir.mkdir(parents=True, exist_ok=True)
    hint = Image.new("RGB", (SIZE, SIZE))
    ImageDraw.Draw(hint).ellipse((12, 12, 52, 52), fill=(255, 255, 255))
    hint.save(input_dir / CONTROL_IMAGE)
    mask = Image.new("RGB", (SIZE, SIZE))
    ImageDraw.Draw(mask).rectangle((SIZE // 2, 0, SIZE, SIZE), fill=(255, 255, 255))
    mask.save(input_dir / MASK_IMAGE)


@pytest.fixture(scope="session")
def compose_models_dir(tmp_path_factory, model_store) -> Path:
    """A ``models`` folder: the tiny checkpoint, its inpainting twin, a ControlNet and three LoRAs."""
    if "models" not in _SHARED:
        root = tmp_path_factory.mktemp("compose-models")
        plain = model_store / "checkpoints" / CKPT
        (root / "checkpoints").mkdir()
        (root / "checkpoints" / CKPT).symlink_to(plain)
        compose_models.write_sd15_inpainting_checkpoint(root / "checkpoints" / INPAINT_CKPT, plain)
        compose_models.write_sd15_controlnet(root / "controlnet" / CONTROLNET)
        make_kohya_lora(SD15_UNET_CONFIG, root / "loras" / LCM_LORA, rank=8, seed=11, kind="lcm",
                        targets="lcm-full")
        make_kohya_lora(SD15_UNET_CONFIG, root / "loras" / STYLE_LORA, rank=4, seed=21)
        save_lora(kohya_state_dict(SD15_UNET_CONFIG, rank=4, seed=31, naming="ldm", up_scale=2.0),
                  root / "loras" / HOOK_LORA)  # ldm naming, and strong enough to see past the LCM-LoRA
        _SHARED["models"] = root
    return _SHARED["models"]


@pytest.fixture(scope="session")
def compose_server(tmp_path_factory, compose_models_dir):
    """A real ComfyUI server with the pack, the test-only nodes, the composition models and input images."""
    if "server" not in _SHARED:
        # fp32 everywhere: on the CPU, ComfyUI's default fp16 text encoder is most of a prompt's time.
        server = ComfyServer(base=tmp_path_factory.mktemp("compose-server"), model_store=compose_models_dir,
                             extra_args=("--force-fp32",))
        workflows.link_testkit(server.base)
        _write_images(server.base / "input")
        server.start()
        _SHARED["server"] = server
    yield _SHARED["server"]
    _SHARED["server"].stop()


def run(server: ComfyServer, prompt: dict) -> dict:
    """POST ``prompt``, wait for it; the history entry (any outcome)."""
    status, payload = server.post_prompt(prompt)
    assert status == 200 and not payload.get("node_errors"), payload  # ComfyUI runs the valid outputs only
    prompt_id = payload["prompt_id"]
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        except (TimeoutError, OSError):  # a starved CPU can keep the server from answering one poll in time
            entry = None
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise AssertionError(f"prompt {prompt_id} not finished in {WAIT_S} s:\n{server.log_tail()}")


def execution_errors(history: dict) -> list[dict]:
    return [data for event, data in history["status"]["messages"] if event == "execution_error"]


def run_latents(server: ComfyServer, prompt: dict) -> dict[str, torch.Tensor]:
    """Run ``prompt`` (must succeed); every ``SaveLatent`` node's latent by node id (each run saves under a new
    prefix, so ComfyUI's cache never skips a save node whose latent it still holds)."""
    _SHARED["runs"] = run_id = int(_SHARED.get("runs", 0)) + 1
    for node in prompt.values():
        if node["class_type"] == "SaveLatent":
            node["inputs"]["filename_prefix"] = f"{node['inputs']['filename_prefix']}_{run_id}"
    history = run(server, prompt)
    errors = execution_errors(history)
    assert history["status"]["status_str"] == "success" and not errors, (
        errors[0]["exception_message"] if errors else history["status"])
    return latents_of(server, history)


def latents_of(server: ComfyServer, history: dict) -> dict[str, torch.Tensor]:
    """The latents the ``SaveLatent`` nodes of a finished prompt wrote, by node id (the files are removed)."""
    out = {}
    for node, result in history["outputs"].items():
        for entry in result.get("latents", []):
            path = server.base / "output" / entry["subfolder"] / entry["filename"]
            out[node] = load_file(str(path))["latent_tensor"]
            os.unlink(path)
    return out


def recorded_calls(server: ComfyServer, label: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, t, output)`` of every UNet call the test-only ``LCMPackTest_UNetRecorder`` named ``label`` recorded
    (the record file is removed)."""
    path = server.base / "output" / "records" / f"{label}.safetensors"
    tensors = load_file(str(path))
    path.unlink()
    return [(tensors[f"x_{n}"], tensors[f"t_{n}"], tensors[f"out_{n}"]) for n in range(len(tensors) // 3)]


def recorder(graph: dict, label: str, model=("lora", 0)) -> tuple[str, int]:
    """The test-only ``LCMPackTest_UNetRecorder`` on ``model`` (records every UNet call as ``label``)."""
    graph[f"recorder_{label}"] = {"class_type": "LCMPackTest_UNetRecorder",
                                  "inputs": {"model": list(model), "label": label}}
    return (f"recorder_{label}", 0)


# ---------------------------------------------------------------------------------------------------------
# Graph builders
# ---------------------------------------------------------------------------------------------------------

def base_graph(route: str = "loader", ckpt: str = CKPT, prompt: str = "a red ball", lcm_lora: str = LCM_LORA,
               style_lora: str = STYLE_LORA, batch: int = 1) -> dict:
    """Checkpoint → LCM-LoRA (the pack's loader, or stack + mixer with a style LoRA at 0.8) → prompts, empty
    latent of ``batch`` images. The accelerated model is ``["lora", 0]`` and its CLIP ``["lora", 1]``."""
    graph = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    if route == "loader":
        graph["lora"] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": lcm_lora, "strength": 1.0,
            "allow_partial": False}}
    elif route == "mixer":
        graph["stack_lcm"] = {"class_type": "LCMPack_LoraStack", "inputs": {
            "lora_name": lcm_lora, "weight": 1.0, "role": "accelerator"}}
        graph["stack_style"] = {"class_type": "LCMPack_LoraStack", "inputs": {
            "lora_name": style_lora, "weight": 0.8, "role": "style", "stack": ["stack_lcm", 0]}}
        graph["lora"] = {"class_type": "LCMPack_LoraMixer", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "stack": ["stack_style", 0], "style_normalization": "none",
            "allow_partial": False}}
    else:
        raise ValueError(route)
    graph["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["lora", 1]}}
    graph["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["lora", 1]}}
    graph["empty"] = {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": batch}}
    return graph


def ksampler_lcm(graph: dict, key: str = "sample", model=("lora", 0), positive=("pos", 0), negative=("neg", 0),
                 latent=("empty", 0), cfg: float = 1.0, steps: int = 2, seed: int = 3, denoise: float = 1.0,
                 save: bool = True) -> dict:
    """Add ``KSampler (LCM)`` (and a ``SaveLatent`` of its output named ``save_<key>``)."""
    graph[key] = {"class_type": "LCMPack_KSamplerLCM", "inputs": {
        "model": list(model), "positive": list(positive), "negative": list(negative), "latent_image": list(latent),
        "seed": seed, "steps": steps, "cfg": cfg, "sampler": "lcm", "gamma": 0.3, "denoise": denoise}}
    if save:
        save_latent(graph, key)
    return graph


def save_latent(graph: dict, key: str) -> dict:
    graph[f"save_{key}"] = {"class_type": "SaveLatent", "inputs": {"samples": [key, 0],
                                                                  "filename_prefix": f"latents/{key}"}}
    return graph


def control_image(graph: dict) -> tuple[str, int]:
    graph["hint"] = {"class_type": "LoadImage", "inputs": {"image": CONTROL_IMAGE}}
    graph["cnet"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
    return ("hint", 0)


def apply_controlnet_old(graph: dict, strength: float, conditioning=("pos", 0), key: str = "apply") -> tuple:
    """Core's old ``ControlNetApply`` (marks the positive ``control_apply_to_uncond``); the new positive."""
    hint = control_image(graph)
    graph[key] = {"class_type": "ControlNetApply", "inputs": {
        "conditioning": list(conditioning), "control_net": ["cnet", 0], "image": list(hint), "strength": strength}}
    return (key, 0)


def apply_controlnet(graph: dict, strength: float, positive=("pos", 0), negative=("neg", 0),
                     key: str = "apply") -> tuple:
    """Core's ``ControlNetApplyAdvanced`` on both conditionings; (positive, negative) outputs."""
    hint = control_image(graph)
    graph[key] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": list(positive), "negative": list(negative), "control_net": ["cnet", 0], "image": list(hint),
        "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}
    return (key, 0), (key, 1)


def samplers_custom(graph: dict, key: str, model=("lora", 0), positive=("pos", 0), negative=("neg", 0),
                    latent=("empty", 0), cfg: float = 1.0, steps: int = 2, seed: int = 3,
                    denoise: float = 1.0) -> dict:
    """Core's ``SamplerCustom`` with the pack's LCM sampler and scheduler (core's own route: the real negative is
    always evaluated and handed to core), saved as ``save_<key>``; same noise as :func:`ksampler_lcm`."""
    graph[f"{key}_sampler"] = {"class_type": "LCMPack_LCMSampler", "inputs": {"sampler": "lcm", "gamma": 0.3}}
    graph[f"{key}_sigmas"] = {"class_type": "LCMPack_LCMScheduler", "inputs": {
        "model": list(model), "steps": steps, "denoise": denoise, "original_inference_steps": 0}}
    graph[key] = {"class_type": "SamplerCustom", "inputs": {
        "model": list(model), "add_noise": True, "noise_seed": seed, "cfg": cfg, "positive": list(positive),
        "negative": list(negative), "sampler": [f"{key}_sampler", 0], "sigmas": [f"{key}_sigmas", 0],
        "latent_image": list(latent)}}
    return save_latent(graph, key)


def fast_path(graph: dict, model=("lora", 0)) -> tuple[str, int]:
    """``LCM Fast Path`` on ``model`` in its default mode (on the CPU it falls back to core with a log line)."""
    graph["fast"] = {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": list(model),
                                                                     "mode": "compile_cuda_graph"}}
    return ("fast", 0)


def encoded_image(graph: dict) -> tuple[str, int]:
    """The control image VAE-encoded (a non-empty latent to inpaint), saved as ``save_source``."""
    if "hint" not in graph:
        graph["hint"] = {"class_type": "LoadImage", "inputs": {"image": CONTROL_IMAGE}}
    graph["source"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["hint", 0], "vae": ["ckpt", 2]}}
    save_latent(graph, "source")
    return ("source", 0)


def mask(graph: dict) -> tuple[str, int]:
    """The right half of the image as a MASK."""
    graph["mask"] = {"class_type": "LoadImageMask", "inputs": {"image": MASK_IMAGE, "channel": "red"}}
    return ("mask", 0)
