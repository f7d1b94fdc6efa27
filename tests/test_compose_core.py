"""Core components composed with the LCM-LoRA on a real ComfyUI server (issue 24): inpainting with a noise mask
(``SetLatentNoiseMask``) and with an inpainting model's conditioning (``InpaintModelConditioning``), regional
conditioning (``ConditioningSetAreaPercentage`` / ``ConditioningSetMask``) and a hook LoRA (``CreateHookLora`` +
``SetClipHooks``), each with the LCM-LoRA through the pack's loader and through the mixer with a style LoRA.

Each test shows the component takes effect the way it should, and that KSampler (LCM) gives what core's own
``SamplerCustom`` route gives with the pack's sampler and scheduler (the real negative handed to core).
"""
from __future__ import annotations

import pytest
import torch
from harness.compose_fixtures import (
    HOOK_LORA,
    INPAINT_CKPT,
    LORA_ROUTES,
    base_graph,
    compose_models_dir,  # noqa: F401
    compose_server,  # noqa: F401
    encoded_image,
    fast_path,
    ksampler_lcm,
    mask,
    run_latents,
    samplers_custom,
)

pytestmark = pytest.mark.server
MASKED_COLUMNS = slice(4, 8)  # the mask covers the right half: latent columns 4..7 of 8
KEPT_COLUMNS = slice(0, 4)


def _close(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, rel: float = 1e-4) -> bool:
    return bool((a - b).abs().max() <= rel * scale)


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_inpainting_with_a_noise_mask_keeps_the_unmasked_latent(route, compose_server):  # noqa: F811
    """``SetLatentNoiseMask``: core blends every denoised prediction with the source outside the mask, and LCM's
    result is its last prediction -- so outside the mask the output is the source latent, inside it is new."""
    graph = base_graph(route)
    source = encoded_image(graph)
    graph["masked"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": list(source), "mask": list(mask(graph))}}
    ksampler_lcm(graph, "inpaint", latent=("masked", 0))
    samplers_custom(graph, "inpaint_core", latent=("masked", 0))
    ksampler_lcm(graph, "unmasked", latent=source)
    latents = run_latents(compose_server, graph)
    src, out, unmasked = latents["save_source"], latents["save_inpaint"], latents["save_unmasked"]
    scale = src.abs().max()
    assert _close(out[..., KEPT_COLUMNS], src[..., KEPT_COLUMNS], scale, rel=1e-5)
    assert (out[..., MASKED_COLUMNS] - src[..., MASKED_COLUMNS]).abs().max() > 1e-2 * scale
    assert (unmasked[..., KEPT_COLUMNS] - src[..., KEPT_COLUMNS]).abs().max() > 1e-2 * scale
    assert torch.equal(out, latents["save_inpaint_core"])


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_inpainting_model_conditioning(route, compose_server):  # noqa: F811
    """``InpaintModelConditioning`` on a 9-channel inpainting checkpoint (the LCM-LoRA on it): the mask and the
    masked image reach the UNet through the conditioning (the output differs from the same latent sampled with
    the plain prompts), and its noise mask keeps the unmasked source."""
    graph = base_graph(route, ckpt=INPAINT_CKPT)
    graph["hint"] = {"class_type": "LoadImage", "inputs": {"image": "control.png"}}
    graph["inpaint_cond"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["hint", 0],
        "mask": list(mask(graph)), "noise_mask": True}}
    encoded_image(graph)
    ksampler_lcm(graph, "inpaint", positive=("inpaint_cond", 0), negative=("inpaint_cond", 1),
                 latent=("inpaint_cond", 2))
    samplers_custom(graph, "inpaint_core", positive=("inpaint_cond", 0), negative=("inpaint_cond", 1),
                    latent=("inpaint_cond", 2))
    ksampler_lcm(graph, "no_concat", latent=("inpaint_cond", 2))
    latents = run_latents(compose_server, graph)
    src, out, no_concat = latents["save_source"], latents["save_inpaint"], latents["save_no_concat"]
    scale = src.abs().max()
    assert _close(out[..., KEPT_COLUMNS], src[..., KEPT_COLUMNS], scale, rel=1e-5)
    assert (out[..., MASKED_COLUMNS] - no_concat[..., MASKED_COLUMNS]).abs().max() > 1e-3 * scale
    assert torch.equal(out, latents["save_inpaint_core"])


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_regional_conditioning(route, compose_server):  # noqa: F811
    """A second prompt on the left half (``ConditioningSetAreaPercentage``) or under a mask (``ConditioningSetMask``),
    combined with the base prompt, changes the output; KSampler (LCM) equals core's SamplerCustom route."""
    graph = base_graph(route)
    graph["region_text"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a blue cube", "clip": ["lora", 1]}}
    graph["area_cond"] = {"class_type": "ConditioningSetAreaPercentage", "inputs": {
        "conditioning": ["region_text", 0], "width": 0.5, "height": 1.0, "x": 0.0, "y": 0.0, "strength": 1.0}}
    graph["area_pos"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                        "conditioning_2": ["area_cond", 0]}}
    graph["mask_cond"] = {"class_type": "ConditioningSetMask", "inputs": {
        "conditioning": ["region_text", 0], "mask": list(mask(graph)), "strength": 1.0, "set_cond_area": "default"}}
    graph["mask_pos"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["pos", 0],
                                                                        "conditioning_2": ["mask_cond", 0]}}
    ksampler_lcm(graph, "plain")
    ksampler_lcm(graph, "by_area", positive=("area_pos", 0))
    samplers_custom(graph, "by_area_core", positive=("area_pos", 0))
    ksampler_lcm(graph, "by_mask", positive=("mask_pos", 0))
    samplers_custom(graph, "by_mask_core", positive=("mask_pos", 0))
    ksampler_lcm(graph, "other_prompt", positive=("region_text", 0))
    latents = run_latents(compose_server, graph)
    plain = latents["save_plain"]
    # The random CLIP-L moves a prompt's embedding a little (NOTES §12): measure against the whole-image change
    # the region's prompt makes.
    prompt_effect = (latents["save_other_prompt"] - plain).abs().max()
    assert prompt_effect > 0
    for kind in ("by_area", "by_mask"):
        assert (latents[f"save_{kind}"] - plain).abs().max() > 0.05 * prompt_effect, kind
        assert torch.equal(latents[f"save_{kind}"], latents[f"save_{kind}_core"]), kind


@pytest.mark.parametrize("route", LORA_ROUTES)
def test_hook_lora_equals_the_same_lora_merged(route, compose_server):  # noqa: F811
    """A hook LoRA (``CreateHookLora`` at 1.0 + ``SetClipHooks`` on the prompt) is applied by core during
    sampling on top of the pack's patches: the result equals core's ``LoraLoaderModelOnly`` of the same file at
    1.0 on the pack's model (the same weights, merged another way), and differs from the graph without it.
    The fast path on the CPU falls back and gives the same result."""
    graph = base_graph(route)
    graph["hook"] = {"class_type": "CreateHookLora", "inputs": {
        "lora_name": HOOK_LORA, "strength_model": 1.0, "strength_clip": 1.0}}
    graph["hooked_clip"] = {"class_type": "SetClipHooks", "inputs": {
        "clip": ["lora", 1], "apply_to_conds": True, "schedule_clip": False, "hooks": ["hook", 0]}}
    graph["hooked_pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball",
                                                                     "clip": ["hooked_clip", 0]}}
    graph["merged_model"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["lora", 0], "lora_name": HOOK_LORA, "strength_model": 1.0}}
    ksampler_lcm(graph, "plain")
    ksampler_lcm(graph, "hooked", positive=("hooked_pos", 0))
    ksampler_lcm(graph, "hooked_fast", model=fast_path(graph), positive=("hooked_pos", 0))
    ksampler_lcm(graph, "merged", model=("merged_model", 0))
    latents = run_latents(compose_server, graph)
    plain, hooked, merged = latents["save_plain"], latents["save_hooked"], latents["save_merged"]
    effect = (merged - plain).abs().max()
    numbers = (f"effect {effect:.3g}, |hooked-merged| {(hooked - merged).abs().max():.3g}, "
               f"|hooked-plain| {(hooked - plain).abs().max():.3g}, |plain| {plain.abs().max():.3g}")
    assert effect > 1e-4 * plain.abs().max(), numbers
    assert (hooked - merged).abs().max() < 1e-2 * effect, numbers
    assert torch.equal(latents["save_hooked_fast"], hooked)
