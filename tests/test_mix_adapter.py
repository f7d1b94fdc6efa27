"""The mixer's weight adapter in real ComfyUI: merged weights bit-identical to the former float32-concat core
LoRA patch (full and low-VRAM loads), factors kept in the files' dtype, key maps built once per execution."""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import models
from lcm_lora_pack.devkit.loras import kind_metadata, kohya_state_dict, save_lora
from lcm_lora_pack.lora.io import read_lora_file
from lcm_lora_pack.lora.mix import MixEntry, mix_terms, normalize_style_weights
from lcm_lora_pack.lora.resolve import resolve

# Linear (attention, ff), 1x1 conv (proj_in) and 3x3 conv (resnet in_layers.2 / out_layers.3) layers.
TARGETS = (".attn1.to_q.weight", ".attn2.to_k.weight", ".proj_in.weight", ".ff.net.2.weight",
           ".in_layers.2.weight", ".out_layers.3.weight")
CONV3 = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
LINEAR = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
# name: (rank, alpha, seed, dtype, targets, kind)
FILES = {
    "fx-lcm16.safetensors": (8, 4.0, 31, torch.float16, TARGETS, "lcm"),
    "fx-style16.safetensors": (4, 1.0, 32, torch.float16, TARGETS, None),
    "fx-style16b.safetensors": (2, 8.0, 33, torch.float16, "attention", None),
    "fx-lcm32.safetensors": (8, 4.0, 34, torch.float32, TARGETS, "lcm"),
    "fx-style32.safetensors": (4, 3.0, 35, torch.float32, TARGETS, None),
    "fx-stylebf.safetensors": (2, 1.0, 36, torch.bfloat16, TARGETS, None),
}
ACC, STY = "accelerator", "style"


@pytest.fixture(scope="module")
def loras(comfy):
    folder = comfy.base / "models" / "loras"
    for name, (rank, alpha, seed, dtype, targets, kind) in FILES.items():
        tensors = kohya_state_dict(models.SD15_UNET_CONFIG, rank=rank, alpha=alpha, seed=seed, targets=targets)
        tensors = {k: v if k.endswith(".alpha") else v.to(dtype) for k, v in tensors.items()}
        save_lora(tensors, folder / name, kind_metadata(kind))
    return folder


@pytest.fixture(scope="module")
def base(comfy, loras):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]


def stack(comfy, items):
    current = None
    for name, weight, role in items:
        (current,) = comfy.run_node("LCMPack_LoraStack", lora_name=name, weight=weight, role=role, stack=current)
    return current


def mixer(comfy, model, items, clip=None, normalization="none", budget=1.0):
    return comfy.run_node("LCMPack_LoraMixer", model=model, stack=stack(comfy, items), clip=clip,
                          style_normalization=normalization, allow_partial=False, style_budget=budget)


def patched_weights(patcher) -> dict[str, torch.Tensor]:
    """The UNet weights as sampling loads them (``load_models_gpu``, full load)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith("diffusion_model.")}


def original_weights(model) -> dict[str, torch.Tensor]:
    """The base UNet weights, unpatched (a loaded clone patches the shared weights in place)."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    return {k: v.detach().clone() for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}


def resolved_entries(model, folder, items) -> list[MixEntry]:
    """The stack's files read and resolved onto the model's weight keys (core key map), as MixEntry."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    shapes = {k: v.shape for k, v in model.model.state_dict().items()}
    entries = []
    for name, weight, role in items:
        lora = read_lora_file(folder / name, name=name)
        resolved = resolve(lora, key_map, None, shapes)
        assert not resolved.unmatched
        entries.append(MixEntry(lora=resolved, weight=weight, role=role))
    return entries


def former_concat(terms) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The former ``lora.mix.concat_modules``: U' = [λ₁s₁U₁|…] and D' = [D₁;…] in float32, alpha = rank."""
    ups, downs, kernel = [], [], None
    for weight, module in terms:
        up = module.up.reshape(module.up.shape[0], -1).to(torch.float32)
        down = module.down.reshape(module.rank, -1).to(torch.float32)
        if module.down.ndim == 4 and kernel is None:
            kernel = tuple(module.down.shape[1:])
        ups.append(up * (weight * module.scale))
        downs.append(down)
    up_cat, down_cat = torch.cat(ups, dim=1), torch.cat(downs, dim=0)
    rank = int(down_cat.shape[0])
    if kernel is not None:
        return (up_cat.reshape(up_cat.shape[0], rank, 1, 1).contiguous(),
                down_cat.reshape(rank, *kernel).contiguous(), float(rank))
    return up_cat.contiguous(), down_cat.contiguous(), float(rank)


def former_patches(entries, weights) -> dict:
    """The former mixer's patches: one core ``LoRAAdapter`` per layer over the float32 concatenation."""
    from comfy.weight_adapter.lora import LoRAAdapter

    patches = {}
    for key, terms in mix_terms(entries, weights).items():
        up, down, alpha = former_concat(terms)
        patches[key] = LoRAAdapter(set(), (up, down, alpha, None, None, None))
    return patches


def former_weights(model, folder, items, normalization="none", budget=1.0) -> dict[str, torch.Tensor]:
    entries = resolved_entries(model, folder, items)
    weights = normalize_style_weights(entries, normalization, budget)
    reference = model.clone()
    assert set(reference.add_patches(former_patches(entries, weights), 1.0)) == set(mix_terms(entries, weights))
    return patched_weights(reference)


def mixed_layers(patcher) -> dict:
    """target key → the mixer's patch object of that layer (the last patch on the key)."""
    return {key: patches[-1][1] for key, patches in patcher.patches.items()}


CASES = {
    "fp16 files, weights 1 / 0.8 / 0.5": ([("fx-lcm16.safetensors", 1.0, ACC), ("fx-style16.safetensors", 0.8, STY),
                                           ("fx-style16b.safetensors", 0.5, STY)], "none"),
    "fp32 files, negative weight": ([("fx-lcm32.safetensors", 1.0, ACC), ("fx-style32.safetensors", -0.7, STY)], "none"),
    "fp16 + fp32 + bf16 files": ([("fx-lcm16.safetensors", 1.0, ACC), ("fx-style32.safetensors", 0.8, STY),
                                  ("fx-stylebf.safetensors", 0.6, STY)], "none"),
    "a zero weight": ([("fx-lcm16.safetensors", 0.9, ACC), ("fx-style16.safetensors", 0.0, STY),
                       ("fx-style16b.safetensors", 1.3, STY)], "none"),
    "sum normalisation": ([("fx-lcm16.safetensors", 1.0, ACC), ("fx-style16.safetensors", 0.8, STY),
                           ("fx-style32.safetensors", 0.7, STY)], "sum"),
    "l2 normalisation": ([("fx-lcm32.safetensors", 1.0, ACC), ("fx-style16.safetensors", 0.8, STY),
                          ("fx-style16b.safetensors", 0.6, STY)], "l2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_merged_weights_are_bit_identical_to_the_former_float32_concat_patch(comfy, base, loras, case):
    items, normalization = CASES[case]
    model = base[0]
    original = original_weights(model)
    new_model = mixer(comfy, model, items, normalization=normalization, budget=0.9)[0]
    ours = patched_weights(new_model)
    reference = former_weights(model, loras, items, normalization, budget=0.9)
    changed = [k for k in original if not torch.equal(reference[k], original[k])]
    assert CONV3 in changed and LINEAR in changed  # 3x3 conv and linear layers are mixed
    for key in original:
        assert torch.equal(ours[key], reference[key]), key
    assert {type(p).__name__ for p in mixed_layers(new_model).values()} == {"MixedLoRAAdapter"}


def _factor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_patches_hold_the_factors_in_the_files_dtype(comfy, base, loras):
    """fp16 files → fp16 factors; their bytes are exactly the source factor bytes of the covered layers."""
    items = CASES["fp16 files, weights 1 / 0.8 / 0.5"][0]
    model = base[0]
    layers = mixed_layers(mixer(comfy, model, items)[0])
    factors = [t for adapter in layers.values() for t in adapter.weights[:2]]
    assert {t.dtype for t in factors} == {torch.float16}
    entries = resolved_entries(model, loras, items)
    source = [t for e in entries for m in e.lora.modules.values() for t in (m.up, m.down)]
    assert {t.dtype for t in source} == {torch.float16}
    assert _factor_bytes(factors) == _factor_bytes(source)
    assert all(adapter.weights[2].dtype == torch.float32 and adapter.weights[2].ndim == 1 for adapter in layers.values())

    mixed_dtypes = mixed_layers(mixer(comfy, model, CASES["fp16 + fp32 + bf16 files"][0])[0])
    assert {t.dtype for a in mixed_dtypes.values() for t in a.weights[:2]} == {torch.float32}


def test_strength_offset_and_function_are_applied_like_core(comfy, base, loras):
    """The adapter at patch strength 0.37, and on a narrowed slice (offset) through a function, equals core's
    LoRAAdapter over the float32 concatenation bit for bit."""
    from comfy.weight_adapter.lora import LoRAAdapter

    items = CASES["fp16 + fp32 + bf16 files"][0]
    model = base[0]
    ours = mixed_layers(mixer(comfy, model, items)[0])
    entries = resolved_entries(model, loras, items)
    former = former_patches(entries, [e.weight for e in entries])
    rows = int(model.model.state_dict()[LINEAR].shape[0]) // 2
    up, down, rank_scale = ours[LINEAR].weights  # the upper half of the rows only, for the offset
    ours_half = type(ours[LINEAR])(set(), (up[:rows], down, rank_scale))
    former_up, former_down, alpha = former[LINEAR].weights[:3]
    former_half = LoRAAdapter(set(), (former_up[:rows], former_down, alpha, None, None, None))

    def patched(conv_adapter, half_adapter):
        clone = model.clone()
        clone.add_patches({CONV3: conv_adapter}, 0.37)
        clone.add_patches({(LINEAR, (0, rows, rows), lambda a: a * 0.5): half_adapter}, 1.3)
        return patched_weights(clone)

    original = original_weights(model)
    mine, core = patched(ours[CONV3], ours_half), patched(former[CONV3], former_half)
    assert not torch.equal(mine[CONV3], original[CONV3])
    assert torch.equal(mine[LINEAR][:rows], original[LINEAR][:rows])
    assert not torch.equal(mine[LINEAR][rows:], original[LINEAR][rows:])
    for key in (CONV3, LINEAR):
        assert torch.equal(mine[key], core[key]), key


def test_low_vram_load_gives_the_same_weights(comfy, base, loras):
    """A partial (low-VRAM) load patches each weight at use through ``LowVramPatch``: same weights as the full
    load; on fp16 weights (intermediate dtype fp16) the adapter equals core's over the float32 concat."""
    from comfy import model_management, ops
    from comfy.model_patcher import LowVramPatch

    items = CASES["fp16 files, weights 1 / 0.8 / 0.5"][0]
    model = base[0]
    new_model = mixer(comfy, model, items)[0]
    full = patched_weights(new_model)
    model_management.unload_all_models()
    new_model.load(torch.device("cpu"), lowvram_model_memory=1)
    try:
        assert new_model.model.model_lowvram and new_model.model.lowvram_patch_counter >= len(new_model.patches)
        for key in (CONV3, LINEAR):
            module = new_model.model.get_submodule(key[: -len(".weight")])
            assert any(isinstance(f, LowVramPatch) for f in module.weight_function)
            weight = ops.cast_bias_weight(module, torch.zeros(1, dtype=module.weight.dtype))[0]
            assert torch.equal(weight, full[key]), key
    finally:
        new_model.unpatch_model(torch.device("cpu"), unpatch_weights=True)

    former = former_patches(resolved_entries(model, loras, items), [w for _, w, _ in items])
    ours = mixed_layers(new_model)
    original = original_weights(model)
    for key in (CONV3, LINEAR):
        half = original[key].to(torch.float16)
        mine = LowVramPatch(key, {key: [(1.0, ours[key], 1.0, None, None)]})(half.clone())
        core = LowVramPatch(key, {key: [(1.0, former[key], 1.0, None, None)]})(half.clone())
        assert mine.dtype == torch.float16 and not torch.equal(mine, half)
        assert torch.equal(mine, core), key


def test_key_maps_are_built_once_per_execution(comfy, base, loras, monkeypatch):
    from comfy import lora as core_lora

    calls = {"unet": 0, "clip": 0}
    unet_keys, clip_keys = core_lora.model_lora_keys_unet, core_lora.model_lora_keys_clip

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(core_lora, "model_lora_keys_unet", counting("unet", unet_keys))
    monkeypatch.setattr(core_lora, "model_lora_keys_clip", counting("clip", clip_keys))
    model, clip = base
    items = CASES["fp16 files, weights 1 / 0.8 / 0.5"][0]
    mixer(comfy, model, items, clip=clip)
    assert calls == {"unet": 1, "clip": 1}
    calls.update(unet=0, clip=0)
    report = comfy.run_node("LCMPack_LoraExport", model=model, stack=stack(comfy, items), clip=clip,
                            filename="fx-keymaps-once", mode="concat", rank=1, overwrite=True)[0]
    assert "Exported fx-keymaps-once.safetensors" in report
    assert calls == {"unet": 1, "clip": 1}
