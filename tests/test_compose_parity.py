"""The pack's LCM step keeps its reference arithmetic inside composed graphs (issue 24), on a real ComfyUI server.

A test-only node (``LCMPackTest_UNetRecorder``, devkit/testkit) records every UNet call of KSampler (LCM) while a
ControlNet or a hook LoRA takes part. diffusers' ``LCMScheduler`` is then stepped with exactly those model outputs
and the pack's noise rule (a generator seeded with the node's seed, as ComfyUI's samplers draw it): each step's
result must be the UNet input of the next recorded call, and the last one the sampled latent.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler
from harness.compose_fixtures import (
    HOOK_LORA,
    LORA_ROUTES,
    apply_controlnet,
    base_graph,
    compose_models_dir,  # noqa: F401
    compose_server,  # noqa: F401
    ksampler_lcm,
    recorded_calls,
    run_latents,
)

pytestmark = pytest.mark.server
SD15_LATENT_SCALE = 0.18215  # ComfyUI's SD15 latent format: model space = saved latent x this
STEPS, SEED = 4, 5
TOLERANCE = 1e-4


def _with_component(graph: dict, component: str) -> dict:
    if component == "controlnet":
        positive, negative = apply_controlnet(graph, 0.8)
        return {"positive": positive, "negative": negative}
    graph["hook"] = {"class_type": "CreateHookLora", "inputs": {
        "lora_name": HOOK_LORA, "strength_model": 1.0, "strength_clip": 1.0}}
    graph["hooked_clip"] = {"class_type": "SetClipHooks", "inputs": {
        "clip": ["lora", 1], "apply_to_conds": True, "schedule_clip": False, "hooks": ["hook", 0]}}
    graph["hooked_pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball",
                                                                     "clip": ["hooked_clip", 0]}}
    return {"positive": ("hooked_pos", 0)}


def _close(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("component", ["controlnet", "hook_lora"])
@pytest.mark.parametrize("route", LORA_ROUTES)
def test_lcm_steps_equal_diffusers_given_the_composed_model_outputs(route, component, compose_server):  # noqa: F811
    label = f"{route}_{component}"
    graph = base_graph(route)
    graph["recorder"] = {"class_type": "LCMPackTest_UNetRecorder", "inputs": {"model": ["lora", 0], "label": label}}
    ksampler_lcm(graph, "sample", model=("recorder", 0), steps=STEPS, seed=SEED, **_with_component(graph, component))
    latent = run_latents(compose_server, graph)["save_sample"] * SD15_LATENT_SCALE
    calls = recorded_calls(compose_server, label)
    assert len(calls) == STEPS  # cfg 1: one UNet call per step

    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             original_inference_steps=50, timestep_scaling=10.0, prediction_type="epsilon")
    scheduler.set_timesteps(STEPS)
    generator = torch.Generator().manual_seed(SEED)
    sample = calls[0][0]
    for i, (x_in, t, eps) in enumerate(calls):
        assert torch.allclose(t, scheduler.timesteps[i].float().expand_as(t), atol=1e-3), (i, t)
        assert _close(x_in, sample) < TOLERANCE, i
        sample = scheduler.step(eps, scheduler.timesteps[i], x_in, generator=generator, return_dict=False)[0]
    assert _close(latent, sample) < TOLERANCE
