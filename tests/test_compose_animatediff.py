"""AnimateDiff-Evolved (unmodified) composed with the LCM-LoRA on a real ComfyUI server (issue 24; issue 29 item 5).

The model is an SD1.5 checkpoint with SD1.5's block layout and an AnimateLCM-format motion module
(``devkit/animatediff_models.py``), loaded by ADE's own Gen1 and Gen2 nodes; the LCM-LoRA of that UNet goes through
the pack's loader or the mixer (with a style LoRA). The latent batch is the video (``FRAMES`` frames). Outputs are
compared as latents.
"""
from __future__ import annotations

import pytest
import torch
from harness.compose_fixtures import (
    LORA_ROUTES,
    base_graph,
    compose_models_dir,  # noqa: F401
    ksampler_lcm,
    run_latents,
    samplers_custom,
    save_latent,
)
from harness.packs_fixtures import (
    AD_CKPT,
    AD_LCM_LORA,
    AD_STYLE_LORA,
    ANIMATELCM_LORA,
    FRAMES,
    MOTION_MODULE,
    packs_models_dir,  # noqa: F401
    packs_server,  # noqa: F401
)

pytestmark = [pytest.mark.server, pytest.mark.slow]


def ad_graph(route: str = "loader", lcm_lora: str = AD_LCM_LORA) -> dict:
    return base_graph(route, ckpt=AD_CKPT, lcm_lora=lcm_lora, style_lora=AD_STYLE_LORA, batch=FRAMES)


def gen2(graph: dict, beta_schedule: str, model=("lora", 0), key: str = "evolved") -> tuple[str, int]:
    """ADE's Gen2 chain: Load AnimateDiff Model → Apply AnimateDiff Model → Use Evolved Sampling; the model."""
    graph["mm"] = {"class_type": "ADE_LoadAnimateDiffModel", "inputs": {"model_name": MOTION_MODULE}}
    graph["mm_apply"] = {"class_type": "ADE_ApplyAnimateDiffModelSimple", "inputs": {"motion_model": ["mm", 0]}}
    graph[key] = {"class_type": "ADE_UseEvolvedSampling", "inputs": {
        "model": list(model), "beta_schedule": beta_schedule, "m_models": ["mm_apply", 0]}}
    return (key, 0)


def gen1(graph: dict, beta_schedule: str, model=("lora", 0), key: str = "gen1") -> tuple[str, int]:
    """ADE's Gen1 ``AnimateDiff Loader``; the model."""
    graph[key] = {"class_type": "ADE_AnimateDiffLoaderGen1", "inputs": {
        "model": list(model), "model_name": MOTION_MODULE, "beta_schedule": beta_schedule}}
    return (key, 0)


def core_ksampler(graph: dict, key: str, model, steps: int = 2, seed: int = 3, cfg: float = 1.0) -> dict:
    """Core's ``KSampler`` with its ``lcm`` sampler (``sgm_uniform``), saved as ``save_<key>``."""
    graph[key] = {"class_type": "KSampler", "inputs": {
        "model": list(model), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "lcm",
        "scheduler": "sgm_uniform", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "denoise": 1.0}}
    return save_latent(graph, key)


def _differs(a: torch.Tensor, b: torch.Tensor, reference: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-3 * reference.abs().max())


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_motion_module_takes_effect(route, packs_server):  # noqa: F811
    """ADE's motion module (Gen2 and Gen1 nodes, beta schedule ``use existing``) changes the frames sampled by
    ``KSampler (LCM)`` and by core's ``KSampler`` + ``lcm`` on the pack-loaded model; without it the two frames of
    the batch are sampled independently (the same graph, ADE removed)."""
    graph = ad_graph(route)
    ksampler_lcm(graph, "plain")
    ksampler_lcm(graph, "with_gen2", model=gen2(graph, "use existing"))
    ksampler_lcm(graph, "with_gen1", model=gen1(graph, "use existing"))
    core_ksampler(graph, "core_plain", ("lora", 0))
    core_ksampler(graph, "core_gen2", ("evolved", 0))
    latents = run_latents(packs_server, graph)
    plain, with_gen2, with_gen1 = latents["save_plain"], latents["save_with_gen2"], latents["save_with_gen1"]
    assert plain.shape[0] == FRAMES and torch.isfinite(with_gen2).all()
    assert _differs(with_gen2, plain, plain)
    assert torch.allclose(with_gen1, with_gen2, atol=1e-5 * plain.abs().max())  # Gen1 = Gen2 for one module
    assert _differs(latents["save_core_gen2"], latents["save_core_plain"], plain)


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_animatelcm_beta_schedule_chosen_in_ade_is_sampled(route, packs_server):  # noqa: F811
    """Issue 29.5. With the AnimateLCM LoRA through the pack's loader (or the mixer), ``KSampler (LCM)``'s preset
    (auto: animatelcm) samples the authors' schedule, LCM on diffusers' *linear* betas, when nothing set the model
    sampling after the loader (ADE's ``use existing``). A beta schedule picked in ADE after the loader is sampled
    as picked: ``lcm`` (ComfyUI's ``linear`` = diffusers' scaled_linear betas) differs from ``use existing`` and
    equals core's own route (``SamplerCustom`` with the pack's LCM sampler and scheduler, which read the model
    sampling ADE set); ``lcm >> sqrt_linear`` (diffusers' linear betas) equals the preset's schedule up to core's
    form of the LCM boundary (c_skip on x instead of on the VP sample: < 1e-5 relative)."""
    graph = ad_graph(route, lcm_lora=ANIMATELCM_LORA)
    ksampler_lcm(graph, "existing", model=gen2(graph, "use existing", key="ade_existing"))
    ksampler_lcm(graph, "lcm", model=gen2(graph, "lcm", key="ade_lcm"))
    samplers_custom(graph, "core_lcm", model=("ade_lcm", 0), cfg=1.5)
    ksampler_lcm(graph, "sqrt", model=gen2(graph, "lcm >> sqrt_linear", key="ade_sqrt"))
    latents = run_latents(packs_server, graph)
    existing, lcm = latents["save_existing"], latents["save_lcm"]
    assert _differs(lcm, existing, existing)
    assert torch.allclose(lcm, latents["save_core_lcm"], rtol=0, atol=1e-6 * existing.abs().max())
    assert torch.allclose(latents["save_sqrt"], existing, rtol=0, atol=1e-4 * existing.abs().max())
