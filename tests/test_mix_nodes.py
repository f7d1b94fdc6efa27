"""LoRA Stack + Mixer nodes in real ComfyUI: parity with diffusers set_adapters + fuse_lora, core LoraLoader,
order, LCM sampling, bad input, and the mix → LCM sampler graph."""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from harness import models
from harness.diffusers_unet import comfy_weights_of_diffusers, diffusers_unet, lora_pipeline
from harness.loras import make_kohya_lora

TARGETS = ("attention+ff")
CONV_TARGETS = (".attn1.to_q.weight", ".attn2.to_k.weight", ".proj_in.weight", ".ff.net.2.weight",
                ".in_layers.2.weight", ".out_layers.3.weight")
LCM, STYLE, STYLE2, XL = "mix-lcm.safetensors", "mix-style.safetensors", "mix-style2.safetensors", "mix-xl.safetensors"


@pytest.fixture(scope="module")
def lora_files(comfy):
    folder = comfy.base / "models" / "loras"
    cfg = models.SD15_UNET_CONFIG
    files = {
        LCM: make_kohya_lora(cfg, folder / LCM, rank=8, alpha=4.0, seed=11, targets=CONV_TARGETS, kind="lcm"),
        STYLE: make_kohya_lora(cfg, folder / STYLE, rank=4, alpha=1.0, seed=12, targets=CONV_TARGETS),
        STYLE2: make_kohya_lora(cfg, folder / STYLE2, rank=2, seed=13, alpha=8.0, targets="attention"),
        XL: make_kohya_lora(models.VEGA_UNET_CONFIG, folder / XL, rank=2, seed=14, targets="attention"),
    }
    return files


@pytest.fixture(scope="module")
def base(comfy):
    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]
    return model, clip


def stack(comfy, *items):
    current = None
    for name, weight, role in items:
        (current,) = comfy.run_node("LCMPack_LoraStack", lora_name=name, weight=weight, role=role, stack=current)
    return current


def mixed(comfy, model, items, **options):
    options.setdefault("style_normalization", "none")
    options.setdefault("allow_partial", False)
    return comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack(comfy, *items), **options)


def patched_weights(patcher) -> dict[str, torch.Tensor]:
    """The weights ComfyUI actually runs with: patch, copy, unpatch."""
    patcher.patch_model(device_to=torch.device("cpu"), force_patch_weights=True)
    try:
        return {k: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith("diffusion_model.")}
    finally:
        patcher.unpatch_model(device_to=torch.device("cpu"))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def deltas(weights, reference):
    return {k: weights[k] - reference[k] for k in reference if not torch.equal(weights[k], reference[k])}


def test_mixer_equals_diffusers_set_adapters_and_fuse_lora(comfy, base, lora_files):
    model = base[0]
    original = {k: v.detach().clone() for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}
    ours, _, report = mixed(comfy, model, [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style")])
    comfy_w = patched_weights(ours)

    unet = diffusers_unet(models.SD15_UNET_CONFIG, original)
    pipe = lora_pipeline(unet)
    pipe.load_lora_weights(str(lora_files[LCM]), adapter_name="lcm")
    pipe.load_lora_weights(str(lora_files[STYLE]), adapter_name="style")
    pipe.set_adapters(["lcm", "style"], adapter_weights=[1.0, 0.8])
    pipe.fuse_lora(components=["unet"])
    pipe.unload_lora_weights()
    diff_w = comfy_weights_of_diffusers(unet, models.SD15_UNET_CONFIG)

    changed = deltas(diff_w, original)
    assert set(changed) == set(deltas(comfy_w, original))
    assert "diffusion_model.input_blocks.1.0.in_layers.2.weight" in changed  # a 3x3 conv is mixed too
    for key in diff_w:
        assert rel(comfy_w[key], diff_w[key]) < 1e-6, key
    for key, delta in changed.items():  # the updates themselves, not only the weights, agree
        assert rel(comfy_w[key] - original[key], delta) < 1e-4, key
    assert "2 LoRAs" in report and "LCM sampling set" in report


def test_weights_w_and_zero_equal_core_loraloader_at_w_and_order_does_not_matter(comfy, base):
    model, clip = base
    pair = patched_weights(mixed(comfy, model, [(STYLE, 0.7, "style"), (LCM, 0.0, "accelerator")])[0])
    core_model = comfy.run_node("LoraLoader", model=model, clip=clip, lora_name=STYLE, strength_model=0.7,
                                strength_clip=0.0)[0]
    core = patched_weights(core_model)
    forward = patched_weights(mixed(comfy, model, [(LCM, 1.0, "accelerator"), (STYLE2, -0.5, "style")])[0])
    backward = patched_weights(mixed(comfy, model, [(STYLE2, -0.5, "style"), (LCM, 1.0, "accelerator")])[0])
    for key in core:
        assert rel(pair[key], core[key]) < 1e-6, key
        assert rel(forward[key], backward[key]) < 1e-6, key
    assert any(not torch.equal(forward[k], core[k]) for k in core)


def test_lcm_sampling_only_with_an_lcm_accelerator_and_input_untouched(comfy, base):
    model = base[0]
    with_lcm, _, report = mixed(comfy, model, [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style")])
    styles_only, _, report2 = mixed(comfy, model, [(STYLE, 0.8, "style"), (STYLE2, 0.5, "style")])
    assert type(with_lcm.get_model_object("model_sampling")).__name__ != type(
        model.get_model_object("model_sampling")).__name__
    assert styles_only.get_model_object("model_sampling") is model.get_model_object("model_sampling")
    assert "unchanged" in report2 and not model.patches


def test_style_normalisation_keeps_the_accelerator(comfy, base):
    model = base[0]
    _, _, report = mixed(comfy, model, [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style"), (STYLE2, 0.8, "style")],
                         style_normalization="sum", style_budget=1.0)
    assert "weight 1 -> applied 1," in report and report.count("weight 0.8 -> applied 0.5,") == 2


@pytest.mark.parametrize("items, message", [
    ([], "empty"),
    ([(STYLE, 0.0, "style"), (LCM, 0.0, "accelerator")], "all LoRA weights are zero"),
    ([(STYLE, 1.0, "style"), (XL, 1.0, "style")], "Vega style LoRA but the model is SD1.x"),
])
def test_bad_stacks_fail_with_a_clear_message(comfy, base, items, message):
    model = base[0]
    with pytest.raises(Exception, match=message):
        comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack(comfy, *items) if items else (),
                       style_normalization="none", allow_partial=False)


def test_applying_the_same_lora_twice_is_refused(comfy, base):
    once = mixed(comfy, base[0], [(LCM, 1.0, "accelerator")])[0]
    with pytest.raises(Exception, match="already applied"):
        mixed(comfy, once, [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style")])


def test_mix_to_lcm_sampler_graph_runs(comfy, lora_files):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "s1": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": LCM, "weight": 1.0, "role": "accelerator"}},
        "s2": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": STYLE, "weight": 0.8, "role": "style",
                                                             "stack": ["s1", 0]}},
        "mix": {"class_type": "LCMPack_LoraMixer", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                              "stack": ["s2", 0], "style_normalization": "none",
                                                              "allow_partial": False}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["mix", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["mix", 0], "seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "lcm", "scheduler": "simple",
            "positive": ["pos", 0], "negative": ["pos", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "mix"}},
    }
    outputs = comfy.run_prompt(prompt)
    image = outputs["save"]["images"][0]
    assert (comfy.base / "output" / image["filename"]).stat().st_size > 0
