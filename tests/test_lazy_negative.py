"""KSamplerLCM's lazy ``negative``: not evaluated at cfg 1 (ComfyUI ignores it there), evaluated otherwise.

The rule (``samplers/guidance.py``) is checked against the installed core's ``sampling_function`` /
``cfg_function`` source; the node is run by ComfyUI's real executor, with a test-only node
(``LCMPackTest_ConditioningProbe``, devkit/testkit) between the negative text encode and the sampler that
records whether it ran. The latents are compared with the node called directly on the real negative.
"""
from __future__ import annotations

import inspect
import re

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.samplers.guidance import UNCOND_READING_OPTIONS, negative_needed, uncond_readers
from safetensors.torch import load_file

NODE = "LCMPack_KSamplerLCM"
PROBE_ID = "LCMPackTest_ConditioningProbe"  # devkit/testkit (not importable before ComfyUI boots)
SAMPLER_INPUTS = {"seed": 5, "steps": 2, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0}


# ---------------------------------------------------------------------------------------------------------
# The pure rule
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [1.0, 1, 1.0 + 1e-12])
def test_cfg_one_on_a_plain_model_does_not_need_the_negative(cfg):
    assert not negative_needed(cfg, {})
    assert not negative_needed(cfg, {"transformer_options": {"patches": {}}})
    assert not negative_needed(cfg, None)


@pytest.mark.parametrize("cfg", [0.0, 0.99, 1.0001, 1.5, 7.5, None])
def test_any_other_cfg_needs_the_negative(cfg):
    assert negative_needed(cfg, {})


@pytest.mark.parametrize("key", UNCOND_READING_OPTIONS)
def test_a_model_option_that_reads_the_uncond_needs_the_negative_at_cfg_one(key):
    value = True if key == "disable_cfg1_optimization" else [lambda args: args["denoised"]]
    assert negative_needed(1.0, {key: value})
    assert uncond_readers({key: value, "transformer_options": {}}) == [key]


def test_unset_option_values_do_not_count():
    options = {"disable_cfg1_optimization": False, "sampler_post_cfg_function": [], "sampler_pre_cfg_function": []}
    assert uncond_readers(options) == []
    assert not negative_needed(1.0, options)


def test_option_keys_are_the_ones_core_sampling_reads(comfy):
    """The key list equals the ``model_options`` keys of the installed ``sampling_function`` + ``cfg_function``."""
    import comfy.samplers

    source = inspect.getsource(comfy.samplers.sampling_function) + inspect.getsource(comfy.samplers.cfg_function)
    read = set(re.findall(r'model_options(?:\.get\(|\[)"(\w+)"', source))
    read |= set(re.findall(r'"(\w+)" in model_options', source))
    assert read == set(UNCOND_READING_OPTIONS)


# ---------------------------------------------------------------------------------------------------------
# The node in ComfyUI's executor
# ---------------------------------------------------------------------------------------------------------

def _graph(cfg: float, cfg_norm: bool = False, lcm_preset: bool = False) -> dict:
    model = ["ckpt", 0]
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "probe": {"class_type": PROBE_ID, "inputs": {"conditioning": ["neg", 0], "label": "negative"}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    if lcm_preset:  # the pack's LCM model sampling: no model option that reads the negative
        graph["lcm"] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {
            "model": model, "original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5}}
        model = ["lcm", 0]
    if cfg_norm:
        graph["norm"] = {"class_type": "CFGNorm", "inputs": {"model": model, "strength": 1.0}}
        model = ["norm", 0]
    graph["sample"] = {"class_type": NODE, "inputs": {
        "model": model, "positive": ["pos", 0], "negative": ["probe", 0], "latent_image": ["empty", 0],
        "cfg": cfg, **SAMPLER_INPUTS}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                            "filename_prefix": f"latents/lazy_{cfg}_{cfg_norm}_{lcm_preset}"}}
    return graph


def _run_recording(comfy, graph: dict) -> tuple[torch.Tensor, list[str]]:
    """Run ``graph``; the saved latent and the probe's executions during this run."""
    probe = comfy.node_class(PROBE_ID)
    probe.executions.clear()
    outputs = comfy.run_prompt(graph)
    entry = outputs["save"]["latents"][0]
    latent = load_file(str(comfy.base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]
    return latent, list(probe.executions)


@pytest.fixture(scope="module")
def direct(comfy):
    """The same model and conditioning built by calling the nodes directly (no executor, nothing lazy)."""
    model, clip, _ = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)
    (positive,) = comfy.run_node("CLIPTextEncode", clip=clip, text="a cat")
    (negative,) = comfy.run_node("CLIPTextEncode", clip=clip, text="blurry")
    (latent,) = comfy.run_node("EmptyLatentImage", width=64, height=64, batch_size=1)

    def sample(cfg, negative_in=negative, sample_model=model):
        (out,) = comfy.run_node(NODE, model=sample_model, positive=positive, negative=negative_in,
                                latent_image=latent, cfg=cfg, **SAMPLER_INPUTS)
        return out["samples"]

    return {"model": model, "sample": sample}


def test_cfg_one_does_not_run_the_negative_branch_and_the_latent_is_unchanged(comfy, direct):
    latent, executions = _run_recording(comfy, _graph(1.0))
    assert executions == []
    assert torch.equal(latent, direct["sample"](1.0))


def test_a_model_with_the_packs_lcm_sampling_skips_the_negative_too(comfy, direct):
    """LCM Model Sampling / LCM-LoRA Loader change the model sampling only (no model option that reads the
    negative, issue 29.1), so the negative is still skipped at cfg 1."""
    latent, executions = _run_recording(comfy, _graph(1.0, lcm_preset=True))
    assert executions == []
    (preset,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=direct["model"], original_inference_steps=50,
                               timestep_scaling=10.0, sigma_data=0.5)
    assert not uncond_readers(preset.model_options)
    assert torch.equal(latent, direct["sample"](1.0, sample_model=preset))


def test_cfg_above_one_runs_the_negative_branch_once_and_uses_it(comfy, direct):
    latent, executions = _run_recording(comfy, _graph(1.5))
    assert executions == ["negative"]
    assert torch.equal(latent, direct["sample"](1.5))
    assert not torch.equal(latent, direct["sample"](1.0))


def test_a_model_patch_reading_the_uncond_gets_the_negative_at_cfg_one(comfy, direct):
    """Core's CFGNorm sets ``sampler_post_cfg_function``: the negative is requested even at cfg 1."""
    latent, executions = _run_recording(comfy, _graph(1.0, cfg_norm=True))
    assert executions == ["negative"]
    (normed,) = comfy.run_node("CFGNorm", model=direct["model"], strength=1.0)
    assert torch.equal(latent, direct["sample"](1.0, sample_model=normed))


def test_empty_negative_is_bit_identical_to_the_real_one_at_cfg_one(direct):
    """What the node samples when the negative was not evaluated ([] for core) equals the real-negative result."""
    assert torch.equal(direct["sample"](1.0, negative_in=None), direct["sample"](1.0))


def test_missing_negative_where_it_is_needed_fails_with_the_fix(direct):
    with pytest.raises(ValueError, match=r"cfg=1\.5.*connect a negative conditioning"):
        direct["sample"](1.5, negative_in=None)


def test_lazy_flag_is_in_the_node_schema(comfy):
    spec = comfy.node_class(NODE).INPUT_TYPES()["required"]["negative"]
    assert spec[0] == "CONDITIONING" and spec[1].get("lazy") is True
    assert "not evaluated at cfg 1.0" in spec[1]["tooltip"].lower()


# ---------------------------------------------------------------------------------------------------------
# What core copies from the positive onto the negative (issue 29.4)
# ---------------------------------------------------------------------------------------------------------

def test_an_old_node_controlnet_or_a_gligen_box_in_the_positive_needs_the_negative():
    from lcm_lora_pack.samplers.guidance import positive_copies_to_negative

    control = object()
    assert positive_copies_to_negative([[None, {"control": control, "control_apply_to_uncond": True}]]) == ["control"]
    assert positive_copies_to_negative([[None, {"gligen": ("position", None, [])}]]) == ["gligen"]
    # the new ControlNet node (applied to both conditionings), an area entry, nothing, or no positive: not needed
    assert positive_copies_to_negative([[None, {"control": control, "control_apply_to_uncond": False}]]) == []
    assert positive_copies_to_negative([[None, {"control": control, "control_apply_to_uncond": True,
                                                "area": (8, 8, 0, 0)}]]) == []
    assert positive_copies_to_negative([[None, {}]]) == []
    assert positive_copies_to_negative(None) == []
