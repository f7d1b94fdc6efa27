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
    recorded_calls,
    recorder,
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
def test_ipadapter_attention_patch_runs_on_every_step(route, packs_server):  # noqa: F811
    """The IP-Adapter changes what ``KSampler (LCM)`` samples, and its attention patch acts on each of the 2 steps
    (timesteps 999, 499). The UNet's outputs are recorded per call; the same graph runs with no IP-Adapter, with
    it on both steps, on the first only (``end_at`` 0.3: σ ≥ σ(t≈700)) and on the second only (``start_at`` 0.3).
    Step 1: "first" gives the full graph's UNet output, "second" exactly the plain one's. Step 2 starts from the
    same latent as the plain graph for "second" and as the full graph for "first"; there "second" differs from
    plain, "first" from full: the patch ran on step 2 of the full graph too."""
    graph = base_graph(route)
    runs = {"plain": ("lora", 0), "full": ipadapter(graph, "ipa_full"),
            "first": ipadapter(graph, "ipa_first", end_at=0.3), "second": ipadapter(graph, "ipa_second", start_at=0.3)}
    for name, model in runs.items():
        ksampler_lcm(graph, name, model=recorder(graph, f"ipa-{name}-{route}", model))
    latents = run_latents(packs_server, graph)
    calls = {name: recorded_calls(packs_server, f"ipa-{name}-{route}") for name in runs}
    (x1, _, plain1), (x2_plain, _, plain2) = calls["plain"]
    (_, _, full1), (x2_full, _, full2) = calls["full"]
    assert all(torch.equal(calls[name][0][0], x1) for name in runs)  # one start latent for all
    assert torch.equal(calls["first"][0][2], full1) and torch.equal(calls["second"][0][2], plain1)
    assert _moved(full1, plain1)
    assert torch.equal(calls["second"][1][0], x2_plain) and _moved(calls["second"][1][2], plain2)
    assert torch.equal(calls["first"][1][0], x2_full) and _moved(calls["first"][1][2], full2)
    assert _moved(latents["save_full"], latents["save_plain"])


def _moved(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` differs from ``b`` by more than float rounding (graphs without the component give bit-identical
    tensors on the CPU, as the equalities above show)."""
    return bool((a - b).abs().max() > 1e-5 * b.abs().max())


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
    assert _moved(both, ipa_only) and _moved(both, cn_only)
    assert (latents["save_both_twice"] - both).abs().max() < 1e-3 * (both - ipa_only).abs().max()
