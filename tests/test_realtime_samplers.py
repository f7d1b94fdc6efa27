"""Every fixed-schedule sampler on the captured loop, through ComfyUI's ``validate_prompt`` + ``PromptExecutor``:
core's ``euler_ancestral`` (pre-drawn noise), ``dpmpp_2m``, ``ddim`` (``sample_euler`` with inpaint option
"random"), the pack's TCD, and a noise mask (``SetLatentNoiseMask``: core's ``KSamplerX0Inpaint`` blend inside
the loop). Each through core ``KSampler`` (the pack's ``KSampler (LCM)`` for TCD) and through
``SamplerCustomAdvanced`` with ``CFGGuider`` cfg 1.8 on a split schedule (``BasicScheduler`` sgm_uniform 10 →
``SplitSigmas`` 7: 3 steps, img2img): the ``SaveLatent`` file of the fast path equals eager ComfyUI's bit for
bit (eager and fast arms in one prompt), and the fast path ran (its capture's report line names the sampler).
Without the fast path's support for the sampler the call falls back and the count assertion fails.

The CUDA graph is replaced by ``EagerReplayBackend`` on the CPU, as in test_realtime_live.py.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import img2img_nodes
from PIL import Image
from safetensors.torch import load_file

SIDE = 8


@pytest.fixture()
def fast_runs(comfy, monkeypatch):
    """The pack's ``LCM Fast Path`` node on the CPU stand-in; returns the list of the calls that ran on the fast
    path (each the model's newest capture line then), filled as prompts run."""
    node_module = sys.modules[comfy.node_class("LCMPack_LCMFastPath").__module__]
    settings = node_module.FastPathSettings
    monkeypatch.setattr(node_module, "FastPathSettings", lambda **kw: settings(backend="eager_replay", **kw))
    host_fp = sys.modules[node_module.__name__.rsplit(".", 2)[0] + ".host.comfy_fast_path"]
    runs, run_fast_path = [], host_fp.run_fast_path

    def counted(state, *args, **kwargs):
        samples = run_fast_path(state, *args, **kwargs)
        runs.append(state.cache.events[-1].line())
        return samples

    monkeypatch.setattr(host_fp, "run_fast_path", counted)
    return runs


def _inputs(comfy, seed: int) -> tuple[str, str]:
    """An input image and a mask image (a smooth gradient in red: soft mask values) for ``seed``."""
    folder = comfy.folder_paths.get_input_directory()
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE * 8, SIDE * 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(f"{folder}/samplers-{seed}.png")
    ramp = np.linspace(0, 255, SIDE * 8, dtype=np.uint8)[None, :].repeat(SIDE * 8, 0)
    Image.fromarray(np.stack([ramp, ramp.T, ramp], -1)).save(f"{folder}/samplers-mask.png")
    return f"samplers-{seed}.png", "samplers-mask.png"


def _sampling_nodes(sampler: str, graph: str, model: list, latent: list, seed: int, prefix: str) -> dict:
    """One arm's sampling: core ``KSampler`` (6 sgm_uniform steps, denoise 0.6; the pack's ``KSampler (LCM)`` 4 steps
    for tcd) or ``SamplerCustomAdvanced`` (``CFGGuider`` 1.8, 3 of 10 sgm_uniform steps), then ``SaveLatent``."""
    tcd, conds = sampler == "tcd", {"positive": ["2", 0], "negative": ["3", 0]}
    if graph == "ksampler" and tcd:
        nodes = {f"{prefix}s": {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "model": model, **conds, "latent_image": latent, "seed": seed, "steps": 4, "cfg": 1.8, "sampler": "tcd",
            "gamma": 0.3, "denoise": 0.6}}}
    elif graph == "ksampler":
        nodes = {f"{prefix}s": {"class_type": "KSampler", "inputs": {
            "model": model, **conds, "latent_image": latent, "seed": seed, "steps": 6, "cfg": 1.8,
            "sampler_name": sampler, "scheduler": "sgm_uniform", "denoise": 0.6}}}
    else:
        select = ({"class_type": "LCMPack_LCMSampler", "inputs": {"sampler": "tcd", "gamma": 0.3}} if tcd else
                  {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}})
        nodes = {
            f"{prefix}n": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
            f"{prefix}k": select,
            f"{prefix}b": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "sgm_uniform",
                                                                     "steps": 10, "denoise": 1.0}},
            f"{prefix}p": {"class_type": "SplitSigmas", "inputs": {"sigmas": [f"{prefix}b", 0], "step": 7}},
            f"{prefix}g": {"class_type": "CFGGuider", "inputs": {"model": model, **conds, "cfg": 1.8}},
            f"{prefix}s": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": [f"{prefix}n", 0], "guider": [f"{prefix}g", 0], "sampler": [f"{prefix}k", 0],
                "sigmas": [f"{prefix}p", 1], "latent_image": latent}},
        }
    nodes[f"{prefix}o"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"{prefix}s", 0],
                                                                  "filename_prefix": f"fast-samplers-{prefix}"}}
    return nodes


ARMS = [(fast, graph) for fast in (False, True) for graph in ("ksampler", "advanced")]


def _prompt(sampler: str, seed: int, image: str, mask: str | None = None) -> dict:
    """checkpoint [→ ModelSamplingLCM for tcd] → img2img of a loaded image [with a noise mask] → four arms, eager
    and through ``LCM Fast Path``, each via ``KSampler`` and via ``SamplerCustomAdvanced`` → ``SaveLatent``."""
    base = ["19", 0] if sampler == "tcd" else ["1", 0]
    prompt = {
        **img2img_nodes(image, "a painting"),
        "20": {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": base, "mode": "cuda_graph"}},
    }
    if sampler == "tcd":
        prompt["19"] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {
            "model": ["1", 0], "original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5}}
    if mask:
        prompt["15"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}}
        prompt["16"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["15", 0]}}
    for fast, graph in ARMS:
        prompt.update(_sampling_nodes(sampler, graph, ["20", 0] if fast else base, ["16", 0] if mask else ["5", 0],
                                      seed, f"{'fast' if fast else 'eager'}-{graph}-"))
    return prompt


def _fast_equals_eager(comfy, runs: list, sampler: str, seed: int, mask: bool = False) -> str:
    """One prompt through the executor: each fast arm's latent equals its eager twin's, both fast arms ran on the
    fast path; the report line of the last capture."""
    image, mask_image = _inputs(comfy, seed)
    outputs = comfy.run_prompt(_prompt(sampler, seed, image, mask_image if mask else None))
    folder = comfy.folder_paths.get_output_directory()

    def saved(prefix: str) -> torch.Tensor:
        (file,) = outputs[f"{prefix}o"]["latents"]
        return load_file(f"{folder}/{file['subfolder']}/{file['filename']}")["latent_tensor"]

    for graph in ("ksampler", "advanced"):
        eager, fast = saved(f"eager-{graph}-"), saved(f"fast-{graph}-")
        assert torch.equal(fast, eager), f"{sampler} {graph}: max |diff| {(fast - eager).abs().max()}"
        assert torch.isfinite(eager).all() and eager.std() > 0.01
    assert len(runs) == 2, runs
    return runs[-1]


SAMPLERS = [("euler_ancestral", "core euler_ancestral", 51), ("dpmpp_2m", "core dpmpp_2m", 52),
            ("tcd", "pack tcd", 53), ("ddim", "core euler", 54)]


@pytest.mark.parametrize(("sampler", "kind", "seed"), SAMPLERS)
def test_sampler_on_the_captured_loop_equals_eager(comfy, fast_runs, sampler, kind, seed):
    line = _fast_equals_eager(comfy, fast_runs, sampler, seed)
    assert f", {kind}, cfg 1.8 (cond + uncond batched)" in line, line


@pytest.mark.parametrize(("sampler", "seed"), [("euler", 61), ("ddim", 62), ("euler_ancestral", 63)])
def test_noise_mask_inside_the_loop_equals_eager(comfy, fast_runs, sampler, seed):
    """``SetLatentNoiseMask`` with a soft mask: core's blend before and after every model call, inside the loop
    (for ddim with core's "random" inpainting noise, drawn as core draws it)."""
    line = _fast_equals_eager(comfy, fast_runs, sampler, seed, mask=True)
    assert "noise mask (inpainting)" in line, line
