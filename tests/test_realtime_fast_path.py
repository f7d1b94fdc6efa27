"""The LCM fast path inside real ComfyUI (CPU): the captured loop gives eager's latent, re-captures only when the
key changes, and falls back to eager ComfyUI -- with a report line -- where it cannot run.

On the CPU the CUDA graph is replaced by ``EagerReplayBackend`` (the same static buffers and replay contract, the
Python re-run): what is proven here is the plumbing -- buffers, pre-drawn noise, schedule, conditioning, key,
cache -- against ComfyUI's own sampling of the same model; the GPU equality is measured in bench/bench_realtime.py.
"""
from __future__ import annotations

import importlib
import logging

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG

fp = None  # lcm_lora_pack.host.comfy_fast_path, imported once ComfyUI has booted


@pytest.fixture(scope="module", autouse=True)
def fast_path_module(comfy):
    global fp
    fp = importlib.import_module("lcm_lora_pack.host.comfy_fast_path")
    return fp


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)


@pytest.fixture(scope="module")
def lcm_model(comfy, sd15):
    return comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15[0], original_inference_steps=50,
                          timestep_scaling=10.0, sigma_data=0.5)[0]


def _cond(seed: int = 0, batch: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(batch, 77, 768, generator=generator), {}]]


def _replay(model, **settings):
    return fp.with_fast_path(model, fp.FastPathSettings(backend="eager_replay", **{"mode": "cuda_graph",
                                                                                   **settings}))


def ksampler_lcm(comfy, model, seed=1, batch=1, steps=4, cfg=1.0, side=8):
    latent = {"samples": torch.zeros(batch, 4, side, side)}
    return comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=_cond(seed), negative=_cond(99),
                          latent_image=latent, seed=seed, steps=steps, cfg=cfg, sampler="lcm", gamma=0.3,
                          denoise=1.0)[0]["samples"]


def _events(model):
    return list(fp.fast_path_state(model).cache.events)


def test_replayed_loop_gives_the_eager_latent_for_new_seeds_and_prompts(comfy, lcm_model):
    fast = _replay(lcm_model)
    before = len(fp.fast_path_state(fast).cache.events) if fp.fast_path_state(fast) else 0
    for seed in (1, 2, 3):
        expected = ksampler_lcm(comfy, lcm_model, seed=seed)
        got = ksampler_lcm(comfy, fast, seed=seed)
        assert torch.equal(got, expected), f"seed {seed}: max |diff| {(got - expected).abs().max():.3g}"
    state = fp.fast_path_state(fast)
    assert state.calls["fast"] >= 3
    new_events = state.cache.events[before:]
    assert len(new_events) <= 1, [e.line() for e in new_events]  # one capture at most; then replays only


def test_core_ksampler_with_the_lcm_sampler_runs_on_the_fast_path(comfy, sd15):
    (core_lcm,) = comfy.run_node("ModelSamplingDiscrete", model=sd15[0], sampling="lcm", zsnr=False)
    fast = _replay(core_lcm)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def run(model):
        return comfy.run_node("KSampler", model=model, seed=4, steps=4, cfg=1.0, sampler_name="lcm",
                              scheduler="simple", positive=_cond(4), negative=_cond(5), latent_image=latent,
                              denoise=1.0)[0]["samples"]

    calls = fp.model_state(fast.model).calls["fast"]
    assert torch.equal(run(fast), run(core_lcm))
    assert fp.model_state(fast.model).calls["fast"] == calls + 1


def test_new_shape_or_schedule_captures_again_and_matches(comfy, lcm_model):
    fast = _replay(lcm_model)
    for index, (batch, steps) in enumerate(((2, 4), (1, 2))):
        expected = ksampler_lcm(comfy, lcm_model, batch=batch, steps=steps)
        count = len(_events(fast)) if fp.fast_path_state(fast) else 0
        assert torch.equal(ksampler_lcm(comfy, fast, batch=batch, steps=steps), expected)
        assert len(_events(fast)) == count + 1
        event = _events(fast)[-1]
        # The first may say "weights changed": the test before sampled this BaseModel with core's model sampling.
        assert event.kind == ("capture" if index else event.kind) and f"batch {batch}, {steps} steps" in event.reason


@pytest.fixture(scope="module")
def lora_name(comfy):
    folder = comfy.base / "models" / "loras"
    return loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "fast-path-lcm.safetensors", rank=4, alpha=4,
                                 kind="lcm").name


def test_lora_strength_changes_stay_equal_to_eager(comfy, sd15, lora_name):
    """Loader -> fast path -> sampler, the strength changed between runs (ComfyUI re-patches the weights)."""
    for strength in (1.0, 0.5, 1.0):
        (patched,) = comfy.run_node("LCMPack_LCMLoraLoader", model=sd15[0], lora_name=lora_name,
                                    strength=strength, allow_partial=False)[:1]
        fast = _replay(patched)
        expected = ksampler_lcm(comfy, patched, seed=7)
        assert torch.equal(ksampler_lcm(comfy, fast, seed=7), expected), f"strength {strength}"
    assert fp.fast_path_state(fast).calls["fast"] >= 3


def test_falls_back_to_eager_with_a_report_line(comfy, lcm_model, caplog):
    """A positive conditioning at strength 0.5 (core scales its prediction: not one plain model call)."""
    fast = _replay(lcm_model)
    eager = fp.model_state(fast.model).calls["eager"]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    positive = [[_cond(3)[0][0], {"strength": 0.5}]]

    def run(model):
        return comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=positive, negative=_cond(99),
                              latent_image=latent, seed=3, steps=4, cfg=1.0, sampler="lcm", gamma=0.3,
                              denoise=1.0)[0]["samples"]

    with caplog.at_level(logging.WARNING):
        got = run(fast)
    assert torch.equal(got, run(lcm_model))
    assert fp.model_state(fast.model).calls["eager"] == eager + 1
    assert any("LCM fast path: running eager" in r.getMessage() and "not one plain entry" in r.getMessage()
               for r in caplog.records), caplog.text


def test_ksampler_lcm_at_cfg_above_one_runs_batched_on_the_fast_path(comfy, lcm_model):
    """cfg 1.5 (before issue 23 a fallback): cond and uncond in one batched model call inside the loop."""
    fast = _replay(lcm_model)
    calls = fp.model_state(fast.model).calls["fast"]
    for seed in (12, 13):
        assert torch.equal(ksampler_lcm(comfy, fast, seed=seed, cfg=1.5), ksampler_lcm(comfy, lcm_model, seed=seed,
                                                                                       cfg=1.5))
    assert fp.model_state(fast.model).calls["fast"] == calls + 2
    assert "cfg 1.5 (cond + uncond batched)" in fp.fast_path_state(fast).cache.events[-1].reason


def test_cuda_graph_backend_on_the_cpu_falls_back(comfy, lcm_model, caplog):
    fast = fp.with_fast_path(lcm_model, fp.FastPathSettings(mode="cuda_graph"))
    with caplog.at_level(logging.WARNING):
        got = ksampler_lcm(comfy, fast, seed=11)
    assert torch.equal(got, ksampler_lcm(comfy, lcm_model, seed=11))
    assert "is not CUDA" in caplog.text


def test_node_gives_a_clone_with_the_hook_and_leaves_the_input(comfy, lcm_model):
    (fast,) = comfy.run_node("LCMPack_LCMFastPath", model=lcm_model, mode="cuda_graph")
    assert fast is not lcm_model and fast.model is lcm_model.model
    assert fast.model_options[fp.OPTION_KEY].mode == "cuda_graph"
    assert fp.OPTION_KEY not in lcm_model.model_options
    wrappers = fast.get_wrappers(fp.extensions.WrappersMP.SAMPLER_SAMPLE, fp.WRAPPER_KEY)
    assert len(wrappers) == 1
    assert not lcm_model.get_wrappers(fp.extensions.WrappersMP.SAMPLER_SAMPLE, fp.WRAPPER_KEY)


def test_fast_vae_decode_equals_vae_decode(comfy, sd15):
    fast_vae = importlib.import_module("lcm_lora_pack.host.comfy_fast_vae")
    vae = sd15[2]
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    (expected,) = comfy.run_node("VAEDecode", vae=vae, samples={"samples": latent})
    got = fast_vae.fast_vae_decode(vae, latent, mode="cuda_graph", backend="eager_replay")
    assert got.shape == expected.shape and torch.equal(got, expected)
    again = fast_vae.fast_vae_decode(vae, latent * 0.5, mode="cuda_graph", backend="eager_replay")
    assert torch.equal(again, comfy.run_node("VAEDecode", vae=vae, samples={"samples": latent * 0.5})[0])
    assert len(fast_vae.fast_decode_report(vae)) == 1  # captured once, replayed for the second latent
    (node_image,) = comfy.run_node("LCMPack_FastVAEDecode", samples={"samples": latent}, vae=vae, mode="cuda_graph")
    assert torch.equal(node_image, expected)  # CPU: the node falls back to VAE.decode


@pytest.mark.slow
def test_compiled_unet_inside_the_captured_loop(comfy, lcm_model):
    """mode compile_cuda_graph on the CPU: torch.compile traces ComfyUI's UNet (dynamo + AOTAutograd; the
    ``aot_eager`` backend skips only the kernel code generation) and runs inside the replayed loop; a second
    seed replays without capturing again. Tolerance: the traced graph may reorder float32 arithmetic."""
    fast = fp.with_fast_path(lcm_model, fp.FastPathSettings(mode="compile_cuda_graph", backend="eager_replay",
                                                            compile_backend="aot_eager"))
    for seed in (21, 22):
        expected = ksampler_lcm(comfy, lcm_model, seed=seed)
        got = ksampler_lcm(comfy, fast, seed=seed)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    state = fp.fast_path_state(fast)
    assert state.compile_failed is None
    assert any(key[2] == "aot_eager" for key in state.compiled)
    assert "compiled UNet" in state.cache.events[-1].reason
