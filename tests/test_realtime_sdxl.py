"""The fast path on an SDXL-family model (issue 23 graph (c): krita's live graph on SDXL), on real ComfyUI on
the CPU with the stand-in backend (``EagerReplayBackend``): the SDXL conditioning (context 2048 plus the pooled
output core turns into the ADM vector ``y``) batched cond + uncond inside the loop at cfg 1.8, euler on a split
schedule, img2img, and one core ControlNet of the same UNet config (its forward takes ``y`` too) inside the loop
-- core's latent, bit for bit, for new seeds and new hints, with one capture."""
from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

SIDE = 8


@pytest.fixture(scope="module")
def vega(comfy):
    """An SDXL-family UNet ComfyUI detects as Segmind Vega: Vega's depths, 320 channels on every level (the tiny
    SDXL config of ``devkit.tiny_sdxl``; 107 M parameters instead of Vega's 745 M), loaded by core's ``UNETLoader``."""
    from lcm_lora_pack.devkit.models import build_unet_state_dict
    from lcm_lora_pack.devkit.tiny_sdxl import TINY_SDXL_UNET_CONFIG

    name = "live-tiny-sdxl-unet.safetensors"
    path = comfy.base / "models" / "diffusion_models" / name
    save_file(build_unet_state_dict(TINY_SDXL_UNET_CONFIG, seed=5), str(path))
    return comfy.run_node("UNETLoader", unet_name=name, weight_dtype="default")[0]


@pytest.fixture(scope="module")
def fp(comfy):
    return importlib.import_module("lcm_lora_pack.host.comfy_fast_path")


@pytest.fixture(scope="module")
def sdxl_controlnet(comfy, vega):
    """A ControlNet of that UNet's config, built as the live bench builds graph (c)'s (``sdxl_live``)."""
    from lcm_lora_pack.bench.device.sdxl_live import controlnet_weights, save_atomically

    unet = {"model.diffusion_model." + k: v for k, v in vega.model.diffusion_model.state_dict().items()}
    save_atomically(comfy.base / "models" / "controlnet" / "live-sdxl-cn.safetensors",
                    controlnet_weights(unet, "cpu"))
    return comfy.run_node("ControlNetLoader", control_net_name="live-sdxl-cn.safetensors")[0]


def _cond(seed: int):
    generator = torch.Generator().manual_seed(seed)
    context = 0.5 * torch.randn(1, 77, 2048, generator=generator)
    pooled = 0.5 * torch.randn(1, 1280, generator=generator)
    return [[context, {"pooled_output": pooled}]]


def _run(comfy, model, seed: int, controlnet=None):
    positive, negative = _cond(1), _cond(2)
    if controlnet is not None:
        hint = torch.rand(1, SIDE * 8, SIDE * 8, 3, generator=torch.Generator().manual_seed(seed))
        positive, negative = comfy.run_node("ControlNetApplyAdvanced", positive=positive, negative=negative,
                                            control_net=controlnet, image=hint, strength=0.7, start_percent=0.0,
                                            end_percent=1.0)[:2]
    (noise,) = comfy.run_node("RandomNoise", noise_seed=seed)
    (sampler,) = comfy.run_node("KSamplerSelect", sampler_name="euler")
    (sigmas,) = comfy.run_node("BasicScheduler", model=model, scheduler="sgm_uniform", steps=10, denoise=1.0)
    sigmas = comfy.run_node("SplitSigmas", sigmas=sigmas, step=7)[1]
    (guide,) = comfy.run_node("CFGGuider", model=model, positive=positive, negative=negative, cfg=1.8)
    latent = {"samples": torch.randn(1, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(seed + 100))}
    return comfy.run_node("SamplerCustomAdvanced", noise=noise, guider=guide, sampler=sampler, sigmas=sigmas,
                          latent_image=latent)[0]["samples"]


@pytest.mark.slow
@pytest.mark.parametrize("control", [False, True], ids=["no-controlnet", "controlnet"])
def test_krita_live_graph_on_sdxl_equals_eager(comfy, vega, fp, sdxl_controlnet, control):
    controlnet = sdxl_controlnet if control else None
    fast = fp.with_fast_path(vega, fp.FastPathSettings(mode="cuda_graph", backend="eager_replay"))
    state = fp.model_state(fast.model)
    calls, events = state.calls["fast"], len(state.cache.events)
    for seed in (1, 2):
        expected, got = _run(comfy, vega, seed, controlnet), _run(comfy, fast, seed, controlnet)
        assert torch.equal(got, expected), f"seed {seed}: max |diff| {(got - expected).abs().max():.3g}"
    assert state.calls["fast"] == calls + 2
    assert len(state.cache.events) <= events + 1, [e.line() for e in state.cache.events[events:]]
    reason = state.cache.events[-1].reason
    assert "cfg 1.8 (cond + uncond batched)" in reason and (("ControlNet at 3 of 3 steps" in reason) == control), reason
