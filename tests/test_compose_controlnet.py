"""ControlNet (core) composed with the LCM-LoRA, on a real ComfyUI server (issue 24; issue 29 item 4).

The LCM-LoRA reaches the model through the pack's loader or through the mixer with a style LoRA; the ControlNet
is a tiny one of the test family (``devkit/compose_models.py``) whose residuals are not zero, so it changes the
output. Each test compares latents of graphs that differ only in the component under test.
"""
from __future__ import annotations

import pytest
import torch
from harness.compose_fixtures import (
    LORA_ROUTES,
    apply_controlnet,
    apply_controlnet_old,
    base_graph,
    compose_models_dir,  # noqa: F401
    compose_server,  # noqa: F401
    fast_path,
    ksampler_lcm,
    run_latents,
)

pytestmark = pytest.mark.server


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_old_controlnet_apply_with_ksampler_lcm_at_cfg_one(route, compose_server):  # noqa: F811
    """Issue 29.4: the old ``ControlNetApply`` marks the positive ``control_apply_to_uncond``; core copies that
    ControlNet onto every negative entry before sampling and divided by zero when KSampler (LCM) handed it an
    empty negative. Now the negative is evaluated there, and the result equals ``ControlNetApplyAdvanced``'s (at
    cfg 1 the unconditional batch is never run, so only the positive's ControlNet counts) and differs from the
    graph without a ControlNet. ``LCM Fast Path`` falls back with a ControlNet (and on the CPU) to the same
    result."""
    graph = base_graph(route)
    ksampler_lcm(graph, "plain")
    ksampler_lcm(graph, "old", positive=apply_controlnet_old(graph, 1.0, key="apply_old"))
    positive, negative = apply_controlnet(graph, 1.0, key="apply_new")
    ksampler_lcm(graph, "new", positive=positive, negative=negative)
    ksampler_lcm(graph, "new_fast", model=fast_path(graph), positive=positive, negative=negative)
    latents = run_latents(compose_server, graph)
    assert torch.equal(latents["save_old"], latents["save_new"])
    assert torch.equal(latents["save_new_fast"], latents["save_new"])  # the fast path falls back to core
    assert (latents["save_old"] - latents["save_plain"]).abs().max() > 1e-2


def test_old_controlnet_apply_at_cfg_above_one(compose_server):  # noqa: F811
    """At cfg 1.5 the negative is evaluated anyway; the old node's copy onto it takes part in the uncond batch."""
    graph = base_graph()
    ksampler_lcm(graph, "plain", cfg=1.5)
    ksampler_lcm(graph, "old", positive=apply_controlnet_old(graph, 1.0, key="apply_old"), cfg=1.5)
    latents = run_latents(compose_server, graph)
    assert torch.isfinite(latents["save_old"]).all()
    assert (latents["save_old"] - latents["save_plain"]).abs().max() > 1e-2


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_controlnet_residuals_reach_the_unet_at_the_configured_strength(route, compose_server):  # noqa: F811
    """Core adds a chained ControlNet's residuals: two applications at 0.5 each with the same hint give what one
    at 1.0 gives (up to float rounding) -- so the strength set on the node is the scale the residuals reach the
    UNet with -- while 0.5 alone differs from 1.0 and from no ControlNet."""
    graph = base_graph(route)
    ksampler_lcm(graph, "plain")
    full_pos, full_neg = apply_controlnet(graph, 1.0, key="cn_full")
    ksampler_lcm(graph, "full", positive=full_pos, negative=full_neg)
    half_pos, half_neg = apply_controlnet(graph, 0.5, key="cn_half")
    ksampler_lcm(graph, "half", positive=half_pos, negative=half_neg)
    twice_pos, twice_neg = apply_controlnet(graph, 0.5, positive=half_pos, negative=half_neg, key="cn_twice")
    ksampler_lcm(graph, "twice", positive=twice_pos, negative=twice_neg)
    latents = run_latents(compose_server, graph)
    full, half, twice, plain = (latents[f"save_{k}"] for k in ("full", "half", "twice", "plain"))
    effect = (full - plain).abs().max()  # what the ControlNet at 1.0 changes
    assert effect > 1e-3 * plain.abs().max()
    assert (twice - full).abs().max() < 1e-3 * effect
    assert (half - full).abs().max() > 0.1 * effect
    assert (half - plain).abs().max() > 0.1 * effect
