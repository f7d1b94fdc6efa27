"""IP-Adapter (``ComfyUI_IPAdapter_plus``, unmodified) composed with the LCM-LoRA on a real ComfyUI server (issue 24).

The LCM-LoRA reaches the tiny SD1.5 model through the pack's loader or the mixer (with a style LoRA); the
IP-Adapter of the tiny family and a ViT-L/14 CLIP vision model that core's ``CLIPVisionLoader`` detects
(``devkit/ipadapter_models.py``) are loaded by IPAdapter plus's ``IPAdapter Model Loader`` and core's loader and
applied with ``IPAdapter Advanced``. The reference image is the control hint (a white disc). Outputs are compared
as latents of graphs that differ only in the component under test.
"""
from __future__ import annotations

import pytest
import torch
from harness.compose_fixtures import (
    LORA_ROUTES,
    apply_controlnet,
    base_graph,
    compose_models_dir,  # noqa: F401
    ksampler_lcm,
    run_latents,
)
from harness.packs_fixtures import (
    CLIP_VISION,
    IPADAPTER,
    packs_models_dir,  # noqa: F401
    packs_server,  # noqa: F401
)

pytestmark = pytest.mark.server


def ipadapter(graph: dict, key: str, model=("lora", 0), weight: float = 1.0, start_at: float = 0.0,
              end_at: float = 1.0) -> tuple[str, int]:
    """IPAdapter plus's ``IPAdapter Advanced`` on ``model`` with the reference image; the patched model."""
    graph["ipa_file"] = {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": IPADAPTER}}
    graph["clip_vision"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION}}
    graph.setdefault("hint", {"class_type": "LoadImage", "inputs": {"image": "control.png"}})
    graph[key] = {"class_type": "IPAdapterAdvanced", "inputs": {
        "model": list(model), "ipadapter": ["ipa_file", 0], "image": ["hint", 0], "weight": weight,
        "weight_type": "linear", "combine_embeds": "concat", "start_at": start_at, "end_at": end_at,
        "embeds_scaling": "V only", "clip_vision": ["clip_vision", 0]}}
    return (key, 0)


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_ipadapter_takes_effect_on_every_step(route, packs_server):  # noqa: F811
    """The IP-Adapter changes the output of ``KSampler (LCM)`` (2 steps: timesteps 999 and 499), and its attention
    patch acts on each step: restricted to the first step (``end_at`` 0.3: σ above σ(t≈700)) or to the second
    (``start_at`` 0.3) it gives a third and a fourth result, each different from no IP-Adapter and from the
    IP-Adapter on both steps -- were the patch skipped on a step of the full graph, the full result would equal
    one of the restricted ones."""
    graph = base_graph(route)
    ksampler_lcm(graph, "plain")
    ksampler_lcm(graph, "full", model=ipadapter(graph, "ipa_full"))
    ksampler_lcm(graph, "first", model=ipadapter(graph, "ipa_first", end_at=0.3))
    ksampler_lcm(graph, "second", model=ipadapter(graph, "ipa_second", start_at=0.3))
    latents = run_latents(packs_server, graph)
    plain, full, first, second = (latents[f"save_{k}"] for k in ("plain", "full", "first", "second"))
    scale = 1e-3 * plain.abs().max()
    for one, other in ((full, plain), (first, plain), (second, plain), (full, first), (full, second)):
        assert (one - other).abs().max() > scale


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_controlnet_and_ipadapter_together(route, packs_server):  # noqa: F811
    """A ControlNet (core) and the IP-Adapter on one LCM-LoRA graph: each still takes effect with the other
    present (the result differs from either alone), and the ControlNet's residuals still reach the UNet at the
    configured strength with the IP-Adapter's attention patch in place (two applications at 0.5 = one at 1.0)."""
    graph = base_graph(route)
    patched = ipadapter(graph, "ipa")
    full_pos, full_neg = apply_controlnet(graph, 1.0, key="cn_full")
    ksampler_lcm(graph, "ipa_only", model=patched)
    ksampler_lcm(graph, "cn_only", positive=full_pos, negative=full_neg)
    ksampler_lcm(graph, "both", model=patched, positive=full_pos, negative=full_neg)
    half_pos, half_neg = apply_controlnet(graph, 0.5, key="cn_half")
    twice_pos, twice_neg = apply_controlnet(graph, 0.5, positive=half_pos, negative=half_neg, key="cn_twice")
    ksampler_lcm(graph, "both_twice", model=patched, positive=twice_pos, negative=twice_neg)
    latents = run_latents(packs_server, graph)
    both, ipa_only, cn_only = latents["save_both"], latents["save_ipa_only"], latents["save_cn_only"]
    assert torch.isfinite(both).all()
    assert (both - ipa_only).abs().max() > 1e-3 * both.abs().max()
    assert (both - cn_only).abs().max() > 1e-3 * both.abs().max()
    assert (latents["save_both_twice"] - both).abs().max() < 1e-3 * (both - ipa_only).abs().max()
