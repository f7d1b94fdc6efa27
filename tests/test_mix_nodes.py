"""LoRA Stack + Mixer nodes in real ComfyUI: parity with diffusers set_adapters + fuse_lora, core LoraLoader,
order, LCM sampling, bad input, and the mix → LCM sampler graph."""
from __future__ import annotations

import shutil

import pytest
import safetensors.torch
import torch
from conftest import SD15_CKPT
from harness.diffusers_unet import comfy_weights_of_diffusers, diffusers_unet, lora_pipeline
from lcm_lora_pack.devkit import models
from lcm_lora_pack.devkit.loras import kohya_state_dict, make_kohya_lora, save_lora
from lcm_lora_pack.lora.applied import applied_loras

TARGETS = ("attention+ff")
CONV_TARGETS = (".attn1.to_q.weight", ".attn2.to_k.weight", ".proj_in.weight", ".ff.net.2.weight",
                ".in_layers.2.weight", ".out_layers.3.weight")
LCM, STYLE, STYLE2, XL = "mix-lcm.safetensors", "mix-style.safetensors", "mix-style2.safetensors", "mix-xl.safetensors"
TEXT = "mix-style-te.safetensors"
LCM_COPY, LCM_RESAVED = "mix-lcm-copy.safetensors", "mix-lcm-resaved.safetensors"
CLIP_PREFIX = "clip_l.transformer.text_model.encoder.layers.0."


def _with_text_encoder(seed: int) -> dict[str, torch.Tensor]:
    """A style LoRA with UNet and CLIP-L (kohya ``lora_te_``) modules."""
    tensors = kohya_state_dict(models.SD15_UNET_CONFIG, rank=4, alpha=2.0, seed=seed, targets="attention")
    gen = torch.Generator().manual_seed(seed)
    for name, (out_f, in_f) in {"self_attn_q_proj": (768, 768), "mlp_fc1": (3072, 768)}.items():
        module = f"lora_te_text_model_encoder_layers_0_{name}"
        tensors[f"{module}.lora_down.weight"] = torch.randn(4, in_f, generator=gen) / in_f ** 0.5
        tensors[f"{module}.lora_up.weight"] = torch.randn(out_f, 4, generator=gen) * 0.1
        tensors[f"{module}.alpha"] = torch.tensor(2.0)
    return tensors


@pytest.fixture(scope="module")
def lora_files(comfy):
    folder = comfy.base / "models" / "loras"
    cfg = models.SD15_UNET_CONFIG
    files = {
        LCM: make_kohya_lora(cfg, folder / LCM, rank=8, alpha=4.0, seed=11, targets=CONV_TARGETS, kind="lcm"),
        STYLE: make_kohya_lora(cfg, folder / STYLE, rank=4, alpha=1.0, seed=12, targets=CONV_TARGETS),
        STYLE2: make_kohya_lora(cfg, folder / STYLE2, rank=2, seed=13, alpha=8.0, targets="attention"),
        XL: make_kohya_lora(models.VEGA_UNET_CONFIG, folder / XL, rank=2, seed=14, targets="attention"),
        TEXT: save_lora(_with_text_encoder(15), folder / TEXT),
    }
    shutil.copyfile(files[LCM], folder / LCM_COPY)  # byte-identical: same sha256
    tensors = safetensors.torch.load_file(files[LCM])  # the same tensors, another header: same content digest only
    safetensors.torch.save_file(tensors, folder / LCM_RESAVED, metadata={"note": "re-saved"})
    assert (folder / LCM_RESAVED).read_bytes() != files[LCM].read_bytes()
    return files


@pytest.fixture(scope="module")
def base(comfy, lora_files):
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


def patched_weights(patcher, prefix="diffusion_model.") -> dict[str, torch.Tensor]:
    """The weights ComfyUI actually runs with, loaded the way sampling loads them (``load_models_gpu``)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith(prefix)}


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
    assert "2 LoRAs" in report and "LCM model sampling set" in report and "Kind: lcm" in report


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


def test_lcm_lora_from_the_loader_is_not_mixed_again(comfy, base):
    loaded = comfy.run_node("LCMPack_LCMLoraLoader", model=base[0], lora_name=LCM, strength=1.0,
                            allow_partial=False)[0]
    with pytest.raises(Exception, match="already applied"):
        mixed(comfy, loaded, [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style")])
    with pytest.raises(Exception, match="acceleration LoRA this model already carries"):
        mixed(comfy, loaded, [(STYLE, 0.8, "accelerator")])
    styled = mixed(comfy, loaded, [(STYLE, 0.8, "style")])[0]  # a style on top of the loader is fine
    assert [e["name"] for e in applied_loras(styled.model_options)] == [LCM, STYLE]
    assert all(len(styled.patches[k]) == 2 for k in loaded.patches)  # LCM patch + the style patch


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


def test_text_encoder_weights_are_mixed_into_clip_like_core(comfy, base):
    model, clip = base
    items = [(LCM, 1.0, "accelerator"), (TEXT, 0.6, "style")]
    new_model, new_clip, report = comfy.run_node("LCMPack_LoraMixer", model=model, clip=clip,
                                                 stack=stack(comfy, *items), style_normalization="none",
                                                 allow_partial=False)
    core_clip = comfy.run_node("LoraLoader", model=model, clip=clip, lora_name=TEXT, strength_model=0.6,
                               strength_clip=0.6)[1]
    ours, core, before = (patched_weights(c.patcher, "clip_l.transformer.text_model.") for c in (new_clip, core_clip, clip))
    changed = [k for k in before if not torch.equal(core[k], before[k])]
    assert sorted(changed) == [CLIP_PREFIX + "mlp.fc1.weight", CLIP_PREFIX + "self_attn.q_proj.weight"]
    for key in before:  # CLIP is stored in fp16 here: agree to fp16 resolution (stochastic rounding differs)
        assert rel(ours[key].float(), core[key].float()) < torch.finfo(core[key].dtype).eps, key
    assert clip.patcher.patches == {} and "weight 0.6 -> applied 0.6, Matched: 42/42 modules" in report


def test_text_encoder_lora_without_clip_says_connect_clip(comfy, base):
    with pytest.raises(Exception, match="connect the CLIP input"):
        mixed(comfy, base[0], [(TEXT, 0.6, "style")])


def test_loha_modules_are_mixed_through_core_and_refused_by_export(comfy, base):
    """LoHa is left to core's adapter: mixer == core LoraLoader chain; the export cannot merge it."""
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    gen = torch.Generator().manual_seed(21)
    tensors = {f"{module}.hada_{n}": torch.randn(shape, generator=gen) * 0.1
               for n, shape in {"w1_a": (320, 2), "w1_b": (2, 320), "w2_a": (320, 2), "w2_b": (2, 320)}.items()}
    tensors[f"{module}.alpha"] = torch.tensor(1.0)
    save_lora(tensors, comfy.base / "models" / "loras" / "mix-loha.safetensors")
    model, clip = base
    ours = patched_weights(mixed(comfy, model, [(STYLE, 0.8, "style"), ("mix-loha.safetensors", 0.5, "style")])[0])
    chain = comfy.run_node("LoraLoader", model=model, clip=clip, lora_name=STYLE, strength_model=0.8,
                           strength_clip=0.0)[0]
    chain = comfy.run_node("LoraLoader", model=chain, clip=clip, lora_name="mix-loha.safetensors",
                           strength_model=0.5, strength_clip=0.0)[0]
    core = patched_weights(chain)
    key = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(ours[key], patched_weights(mixed(comfy, model, [(STYLE, 0.8, "style")])[0])[key])
    for name in core:
        assert rel(ours[name], core[name]) < 1e-6, name
    with pytest.raises(Exception, match="LoHa/LoKr/DoRA"):
        comfy.run_node("LCMPack_LoraExport", model=model, stack=stack(comfy, ("mix-loha.safetensors", 0.5, "style")),
                       filename="never-written", mode="concat", rank=1, overwrite=False)
    assert not (comfy.base / "models" / "loras" / "never-written.safetensors").exists()


@pytest.mark.parametrize("second, role", [(LCM, "accelerator"), (LCM, "style"), (LCM_COPY, "accelerator"),
                                          (LCM_RESAVED, "style")])
def test_the_same_lora_twice_in_one_stack_is_refused_naming_both_entries(comfy, base, second, role):
    """Issue 18, bug 3: the same accelerator twice in one stack (same file, a byte-identical copy, the same
    tensors re-saved, or the same file as a style) was applied twice by the mixer and exported at double rank."""
    items = [(LCM, 1.0, "accelerator"), (STYLE, 0.8, "style"), (second, 1.0, role)]
    calls = {"LCMPack_LoraMixer": {"style_normalization": "none", "allow_partial": False},
             "LCMPack_LoraExport": {"filename": "mix-twice", "mode": "concat", "rank": 8, "overwrite": True}}
    for node_id, options in calls.items():
        with pytest.raises(Exception) as caught:
            comfy.run_node(node_id, model=base[0], stack=stack(comfy, *items), **options)
        message = str(caught.value)
        assert type(caught.value).__name__ == "LoraAppliedTwice", (node_id, message)
        assert f"entry 1 '{LCM}' (accelerator)" in message and f"entry 3 '{second}' ({role})" in message, message
    assert not (comfy.base / "models" / "loras" / "mix-twice.safetensors").exists()


def test_mixer_of_one_lora_the_model_carries_passes_it_on_like_the_loader(comfy, base):
    """One "already applied" policy: a request that is wholly applied already (a stack of one) hands the model
    on unchanged with a report line, in the mixer as in the loader."""
    loaded = comfy.run_node("LCMPack_LCMLoraLoader", model=base[0], lora_name=LCM, strength=1.0,
                            allow_partial=False)[0]
    again, _, report = mixed(comfy, loaded, [(LCM_COPY, 1.0, "accelerator")])
    assert again is loaded and "already applied" in report and "not applied twice" in report
