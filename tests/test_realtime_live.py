"""The graphs live clients send, on the captured loop, inside real ComfyUI (CPU): krita-ai-diffusion's live graph
(``SamplerCustomAdvanced`` with ``RandomNoise``, ``KSamplerSelect`` euler, ``BasicScheduler`` sgm_uniform +
``SplitSigmas``: 3 sampled steps of 10, img2img, ``CFGGuider`` cfg 1.8 -- cond and uncond in one batched model
call), with a ControlNet (``ControlNetApplyAdvanced``: the control model inside the loop) and without,
``BasicGuider``, the ``lcm`` sampler at cfg > 1, core ``KSampler`` / ``SamplerCustom`` with euler: each gives the
latent of core's own sampling, bit for bit, for new seeds and new input images, capturing once.

The CUDA graph is replaced by ``EagerReplayBackend`` on the CPU (same static buffers, same replay contract; the
Python re-run), as in test_realtime_fast_path.py: proven here is the loop's arithmetic, the batch order and the
transformer options against core's ``sampling_function`` / ``calc_cond_batch`` / ``cfg_function`` and
``sample_euler``; the GPU equality of the captured graph is the bench's (bench/device/bench_server_realtime.py).
"""
from __future__ import annotations

import gc
import importlib
import logging
import sys

import numpy as np
import pytest
import torch
from conftest import SD15_CKPT, img2img_nodes
from PIL import Image

fp = None  # lcm_lora_pack.host.comfy_fast_path, imported once ComfyUI has booted
SIDE = 8


@pytest.fixture(scope="module")
def sd15(comfy):
    """The tiny SD1.5 checkpoint (model, clip, vae); imports the module under test once ComfyUI has booted."""
    global fp
    fp = importlib.import_module("lcm_lora_pack.host.comfy_fast_path")
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)


def _cond(seed: int, tokens: int = 77, **extra):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(1, tokens, 768, generator=generator), dict(extra)]]


def _replay(model):
    return fp.with_fast_path(model, fp.FastPathSettings(mode="cuda_graph", backend="eager_replay"))


def _image_latent(seed: int):
    return {"samples": torch.randn(1, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))}


def custom_advanced(comfy, model, seed, latent, sampler="euler", cfg=1.8, split=7, steps=10, guider="cfg",
                    negative=None, positive=None):
    """krita's live graph: RandomNoise, KSamplerSelect, BasicScheduler sgm_uniform + SplitSigmas (low part)."""
    (noise,) = comfy.run_node("RandomNoise", noise_seed=seed)
    (sampler_object,) = comfy.run_node("KSamplerSelect", sampler_name=sampler)
    (sigmas,) = comfy.run_node("BasicScheduler", model=model, scheduler="sgm_uniform", steps=steps, denoise=1.0)
    if split:
        sigmas = comfy.run_node("SplitSigmas", sigmas=sigmas, step=split)[1]
    if guider == "cfg":
        (guide,) = comfy.run_node("CFGGuider", model=model, positive=positive or _cond(1),
                                  negative=negative or _cond(2), cfg=cfg)
    else:
        (guide,) = comfy.run_node("BasicGuider", model=model, conditioning=_cond(1))
    return comfy.run_node("SamplerCustomAdvanced", noise=noise, guider=guide, sampler=sampler_object,
                          sigmas=sigmas, latent_image=latent)[0]["samples"]


def _assert_fast_equals_eager(model, fast, run, cases):
    state = fp.model_state(fast.model)
    calls, events = state.calls["fast"], len(state.cache.events)
    for case in cases:
        expected, got = run(model, case), run(fast, case)
        assert torch.equal(got, expected), f"{case}: max |diff| {(got - expected).abs().max():.3g}"
    assert state.calls["fast"] == calls + len(cases)
    assert len(state.cache.events) <= events + 1, [e.line() for e in state.cache.events[events:]]  # then replays
    return state.cache.events[-1]


def test_krita_live_graph_cfg_euler_split_schedule_img2img(comfy, sd15):
    """3 of 10 sgm_uniform steps, cfg 1.8, euler, a new seed and a new input image per call: core's latent."""
    fast = _replay(sd15[0])
    event = _assert_fast_equals_eager(
        sd15[0], fast, lambda model, case: custom_advanced(comfy, model, case, _image_latent(case)), (1, 2, 3))
    assert "3 steps, core euler, cfg 1.8 (cond + uncond batched)" in event.reason, event.line()


def test_basic_guider_and_full_schedule_txt2img(comfy, sd15):
    fast = _replay(sd15[0])
    empty = {"samples": torch.zeros(1, 4, SIDE, SIDE)}
    _assert_fast_equals_eager(sd15[0], fast, lambda model, seed: custom_advanced(
        comfy, model, seed, empty, split=0, steps=4, guider="basic"), (4, 5))


def test_lcm_sampler_at_cfg_above_one(comfy, sd15):
    """KSamplerSelect lcm on core's LCM model sampling, CFGGuider 1.5: the re-noising LCM loop, batched guidance."""
    (lcm,) = comfy.run_node("ModelSamplingDiscrete", model=sd15[0], sampling="lcm", zsnr=False)
    fast = _replay(lcm)
    empty = {"samples": torch.zeros(1, 4, SIDE, SIDE)}
    event = _assert_fast_equals_eager(lcm, fast, lambda model, seed: custom_advanced(
        comfy, model, seed, empty, sampler="lcm", cfg=1.5, split=0, steps=4), (6, 7))
    assert "core lcm, cfg 1.5" in event.reason


def test_core_ksampler_and_sampler_custom_with_euler_at_cfg(comfy, sd15):
    fast = _replay(sd15[0])
    latent = _image_latent(8)

    def ksampler(model, seed):
        return comfy.run_node("KSampler", model=model, seed=seed, steps=6, cfg=2.0, sampler_name="euler",
                              scheduler="sgm_uniform", positive=_cond(1), negative=_cond(2), latent_image=latent,
                              denoise=0.5)[0]["samples"]

    def sampler_custom(model, seed):
        (sampler,) = comfy.run_node("KSamplerSelect", sampler_name="euler")
        (sigmas,) = comfy.run_node("BasicScheduler", model=model, scheduler="sgm_uniform", steps=4, denoise=1.0)
        return comfy.run_node("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=1.8,
                              positive=_cond(1), negative=_cond(2), sampler=sampler, sigmas=sigmas,
                              latent_image=latent)[0]["samples"]

    _assert_fast_equals_eager(sd15[0], fast, ksampler, (9, 10))
    _assert_fast_equals_eager(sd15[0], fast, sampler_custom, (11, 12))


def test_unequal_prompt_lengths_are_batched_as_core_batches_them(comfy, sd15):
    """A 154-token negative against a 77-token positive: core's cond_cat repeats the shorter one; so does the loop."""
    fast = _replay(sd15[0])
    _assert_fast_equals_eager(sd15[0], fast, lambda model, seed: custom_advanced(
        comfy, model, seed, _image_latent(seed), negative=_cond(3, tokens=154)), (13,))


@pytest.mark.parametrize(("how", "reason"), [
    ("sampler", "sampler sample_heun is not one the fast path replays (lcm, tcd, euler, euler_ancestral"),
    ("strength", "the conditioning is not one plain entry each"),
    ("empty negative", "cfg=1.8 with no negative conditioning"),
    ("flow ancestral", "runs sample_euler_ancestral_RF on this flow model"),
])
def test_what_it_does_not_replay_falls_back_with_a_reason(comfy, sd15, caplog, how, reason):
    model = sd15[0]
    if how == "flow ancestral":  # CONST model sampling: core's euler_ancestral runs its RF variant
        (model,) = comfy.run_node("ModelSamplingSD3", model=model, shift=3.0)
    fast = _replay(model)
    options = {"sampler": {"sampler": "heun", "flow ancestral": "euler_ancestral"}[how]} if how in (
        "sampler", "flow ancestral") else {}
    if how == "strength":
        options["negative"] = _cond(2, strength=0.5)
    eager = fp.model_state(fast.model).calls["eager"]
    latent = _image_latent(14)

    def run(model):
        if how == "empty negative":
            (noise,) = comfy.run_node("RandomNoise", noise_seed=14)
            (sampler,) = comfy.run_node("KSamplerSelect", sampler_name="euler")
            (sigmas,) = comfy.run_node("BasicScheduler", model=model, scheduler="sgm_uniform", steps=3, denoise=1.0)
            (guide,) = comfy.run_node("CFGGuider", model=model, positive=_cond(1), negative=[], cfg=1.8)
            return comfy.run_node("SamplerCustomAdvanced", noise=noise, guider=guide, sampler=sampler,
                                  sigmas=sigmas, latent_image=latent)[0]["samples"]
        return custom_advanced(comfy, model, 14, latent, **options)

    with caplog.at_level(logging.WARNING):
        got = run(fast)
    assert torch.equal(got, run(model))
    assert fp.model_state(fast.model).calls["eager"] == eager + 1
    assert any("LCM fast path: running eager" in r.getMessage() and reason in r.getMessage()
               for r in caplog.records), caplog.text


@pytest.fixture(scope="module")
def controlnet(comfy):
    from lcm_lora_pack.devkit.compose_models import write_sd15_controlnet

    write_sd15_controlnet(comfy.base / "models" / "controlnet" / "live-cn.safetensors")
    return comfy.run_node("ControlNetLoader", control_net_name="live-cn.safetensors")[0]


def _hint(seed: int):
    """A hint image; odd seeds at another size (core upscales it to the latent's pixels)."""
    side = SIDE * 8 if seed % 2 == 0 else SIDE * 6
    return torch.rand(1, side, side, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cfg", [1.8, 1.0])
def test_controlnet_inside_the_loop_with_strength_and_range(comfy, sd15, controlnet, cfg):
    """krita's graph with ControlNetApplyAdvanced (strength 0.7, 0–80 %: the last of the 3 split steps runs without
    it): the control model's forward inside the loop, the hint rebuilt per call into its buffer -- core's latent
    for new seeds and new hint images (one at another size), one capture."""
    fast = _replay(sd15[0])

    def run(model, seed):
        positive, negative = comfy.run_node("ControlNetApplyAdvanced", positive=_cond(1), negative=_cond(2),
                                            control_net=controlnet, image=_hint(seed), strength=0.7,
                                            start_percent=0.0, end_percent=0.8)[:2]
        (noise,) = comfy.run_node("RandomNoise", noise_seed=seed)
        (sampler,) = comfy.run_node("KSamplerSelect", sampler_name="euler")
        (sigmas,) = comfy.run_node("BasicScheduler", model=model, scheduler="sgm_uniform", steps=10, denoise=1.0)
        sigmas = comfy.run_node("SplitSigmas", sigmas=sigmas, step=7)[1]
        if cfg == 1.0:
            (guide,) = comfy.run_node("BasicGuider", model=model, conditioning=positive)
        else:
            (guide,) = comfy.run_node("CFGGuider", model=model, positive=positive, negative=negative, cfg=cfg)
        return comfy.run_node("SamplerCustomAdvanced", noise=noise, guider=guide, sampler=sampler, sigmas=sigmas,
                              latent_image=_image_latent(seed))[0]["samples"]

    without = custom_advanced(comfy, sd15[0], 41, _image_latent(41))
    event = _assert_fast_equals_eager(sd15[0], fast, run, (41, 42))
    assert "ControlNet at 2 of 3 steps" in event.reason, event.line()
    if cfg != 1.0:
        assert not torch.equal(run(sd15[0], 41), without)  # the ControlNet changes the latent


def test_chained_controlnets_fall_back_with_a_reason(comfy, sd15, controlnet, caplog):
    fast = _replay(sd15[0])
    positive, negative = _cond(1), _cond(2)
    for strength in (0.5, 0.8):  # the second ControlNet chains onto the first (previous_controlnet)
        positive, negative = comfy.run_node("ControlNetApplyAdvanced", positive=positive, negative=negative,
                                            control_net=controlnet, image=_hint(44), strength=strength,
                                            start_percent=0.0, end_percent=1.0)[:2]
    eager = fp.model_state(fast.model).calls["eager"]

    def run(model):
        return custom_advanced(comfy, model, 44, _image_latent(44), positive=positive, negative=negative)

    with caplog.at_level(logging.WARNING):
        got = run(fast)
    assert torch.equal(got, run(sd15[0]))
    assert fp.model_state(fast.model).calls["eager"] == eager + 1
    assert "more than one ControlNet on the conditioning" in caplog.text


def _krita_prompt(seed: int, image: str, fast: bool) -> dict:
    """krita's live graph in API format: checkpoint → [LCM Fast Path] → SamplerCustomAdvanced (img2img of a loaded
    image, 3 of 10 sgm_uniform steps, euler, CFGGuider 1.8) → VAEDecode → PreviewImage."""
    model = ["10", 0] if fast else ["1", 0]
    prompt = {
        **img2img_nodes(image, "a live painting"),
        "6": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "sgm_uniform", "steps": 10,
                                                         "denoise": 1.0}},
        "9": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["8", 0], "step": 7}},
        "11": {"class_type": "CFGGuider", "inputs": {"model": model, "positive": ["2", 0], "negative": ["3", 0],
                                                     "cfg": 1.8}},
        "12": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["6", 0], "guider": ["11", 0],
                                                                 "sampler": ["7", 0], "sigmas": ["9", 1],
                                                                 "latent_image": ["5", 0]}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 2]}},
        "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
    }
    if fast:
        prompt["10"] = {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": ["1", 0], "mode": "cuda_graph"}}
    return prompt


def test_krita_graph_through_the_prompt_executor(comfy, monkeypatch):
    """The whole graph through ComfyUI's validate_prompt + PromptExecutor, the node's settings on the CPU stand-in:
    the previews equal eager's, pixel for pixel, for new seeds and new input images, and the loop ran."""
    node_module = sys.modules[comfy.node_class("LCMPack_LCMFastPath").__module__]
    settings = node_module.FastPathSettings
    monkeypatch.setattr(node_module, "FastPathSettings", lambda **kw: settings(backend="eager_replay", **kw))
    temp = comfy.folder_paths.get_temp_directory()
    host_fp = sys.modules[node_module.__name__.rsplit(".", 2)[0] + ".host.comfy_fast_path"]
    # Each prompt runs on a new executor, so each loads its own checkpoint: the states of the models used (keyed
    # weakly by model) are held here, a collected model's state would otherwise leave the count.
    states, model_state = [], host_fp.model_state
    monkeypatch.setattr(host_fp, "model_state", lambda *a, **kw: states.append(model_state(*a, **kw)) or states[-1])

    def preview(prompt: dict):
        (image,) = comfy.run_prompt(prompt)["14"]["images"]
        return np.asarray(Image.open(f"{temp}/{image['subfolder']}/{image['filename']}"))

    for seed in (21, 22):
        name = f"live-{seed}.png"
        pixels = np.random.default_rng(seed).integers(0, 256, (SIDE * 8, SIDE * 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(comfy.folder_paths.get_input_directory() + "/" + name)
        eager, fast = preview(_krita_prompt(seed, name, False)), preview(_krita_prompt(seed, name, True))
        assert np.array_equal(fast, eager), f"seed {seed}"
        gc.collect()  # the models of these prompts may go: the count must not depend on when
    assert sum(state.calls["fast"] for state in {id(state): state for state in states}.values()) == 2


def test_fast_decode_of_core_taesd_equals_vae_decode(comfy, sd15):
    """Graph (a)'s decoder: core's ``VAELoader`` "taesd" (random weights of TAESD's architecture in
    ``models/vae_approx``) decoded by the fast decode equals ``VAEDecode`` of the same VAE, new latents replayed."""
    from lcm_lora_pack.bench.device.live_graphs import taesd_state_dicts
    from safetensors.torch import save_file

    folder = comfy.base / "models" / "vae_approx"
    folder.mkdir(parents=True, exist_ok=True)
    for name, weights in taesd_state_dicts(23).items():
        save_file(weights, str(folder / f"taesd_{name}.safetensors"))
    (vae,) = comfy.run_node("VAELoader", vae_name="taesd")
    fast_vae = importlib.import_module("lcm_lora_pack.host.comfy_fast_vae")
    for seed in (31, 32):
        latent = _image_latent(seed)["samples"]
        (expected,) = comfy.run_node("VAEDecode", vae=vae, samples={"samples": latent})
        got = fast_vae.fast_vae_decode(vae, latent, mode="cuda_graph", backend="eager_replay")
        assert got.shape == expected.shape == (1, SIDE * 8, SIDE * 8, 3) and torch.equal(got, expected)
        assert torch.isfinite(expected).all() and expected.std() > 0.01  # a real image, not NaN or a flat one
    assert len(fast_vae.fast_decode_report(vae)) == 1  # captured once, replayed for the second latent
