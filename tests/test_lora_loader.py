"""The LCM-LoRA Loader node inside real ComfyUI: patches, reports, refusals, and the applied-twice guard.

Exceptions raised inside ComfyUI come from the pack's mangled module: compare them by class name.
"""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT, VEGA_UNET
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.host import PromptFailed
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG, VEGA_UNET_CONFIG

SDXL_UNET_CONFIG = {**VEGA_UNET_CONFIG, "transformer_depth": [0, 0, 2, 2, 10, 10],
                    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10}
LOADER = "LCMPack_LCMLoraLoader"


@pytest.fixture(scope="module")
def sd15(comfy):
    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]
    return model, clip


@pytest.fixture(scope="module")
def vega(comfy):
    return comfy.run_node("UNETLoader", unet_name=VEGA_UNET, weight_dtype="default")[0]


@pytest.fixture(scope="module")
def lora_files(comfy):
    """Generated LoRAs under published names in the host's models/loras."""
    folder = comfy.base / "models" / "loras"
    sd15_lcm = loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "lcm-lora-sdv1-5.safetensors", rank=8, alpha=4,
                                     kind="lcm")
    renamed = dict(loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, seed=2))
    old = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
    for suffix in (".lora_down.weight", ".lora_up.weight", ".alpha"):
        renamed[f"{old}_renamed{suffix}"] = renamed.pop(old + suffix)
    with_text = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, seed=3) | loras.text_encoder_state_dict(rank=4)
    loha = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    dora = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v"
    adapters = {f"{loha}.hada_w1_a": torch.randn(320, 2), f"{loha}.hada_w1_b": torch.randn(2, 768) / 30,
                f"{loha}.hada_w2_a": torch.randn(320, 2), f"{loha}.hada_w2_b": torch.randn(2, 768) / 30,
                f"{loha}.alpha": torch.tensor(2.0), f"{dora}.lora_down.weight": torch.randn(2, 768) / 30,
                f"{dora}.lora_up.weight": torch.randn(320, 2) / 30, f"{dora}.dora_scale": torch.ones(320, 1)}
    return {
        "adapters": loras.save_lora(adapters, folder / "loha-and-dora.safetensors").name,
        "sd15": sd15_lcm.name,
        "sd15_copy": loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "lcm-lora-copy.safetensors", rank=8,
                                           alpha=4, kind="lcm").name,
        "sd15_other_lcm": loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "my-lcm-v2.safetensors", rank=4,
                                                seed=9, kind="lcm").name,
        "sd15_style": loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "watercolor.safetensors", rank=4,
                                            seed=5).name,
        "sdxl": loras.make_kohya_lora(SDXL_UNET_CONFIG, folder / "lcm-lora-sdxl.safetensors", rank=2,
                                      kind="lcm").name,
        "vega": loras.make_kohya_lora(VEGA_UNET_CONFIG, folder / "Segmind-VegaRT.safetensors", rank=4).name,
        "renamed": loras.save_lora(renamed, folder / "renamed-module.safetensors").name,
        "with_text": loras.save_lora(with_text, folder / "style-with-text.safetensors").name,
    }


def _load(comfy, model, lora_name, clip=None, strength=1.0, allow_partial=False):
    return comfy.run_node(LOADER, model=model, lora_name=lora_name, strength=strength,
                          allow_partial=allow_partial, clip=clip)


def _assert_untouched(model):
    assert model.patches == {}
    assert "lcm_lora_pack" not in model.model_options
    assert "model_sampling" not in model.object_patches


def test_lcm_lora_patches_a_clone_and_sets_lcm_sampling(comfy, sd15, lora_files):
    model, clip = sd15
    patched, patched_clip, report = _load(comfy, model, lora_files["sd15"], clip=clip)
    assert patched is not model and len(patched.patches) == 40
    assert type(patched.get_model_object("model_sampling")).__name__ == "LCMModelSampling"
    assert patched_clip is clip  # no text-encoder modules in this LoRA
    for line in ("Family: LoRA SD1.x, model SD1.x", "Kind: lcm", "Matched: 40/40 modules", "LCM sampler"):
        assert line in report, report
    _assert_untouched(model)


def test_patch_values_are_strength_alpha_over_rank(comfy, sd15, lora_files):
    """The patch core applies is W + s·(α/r)·up·down for the file's tensors (α 4, r 8, s 0.5)."""
    from comfy.lora import calculate_weight
    from safetensors.torch import load_file

    model, _ = sd15
    patched = _load(comfy, model, lora_files["sd15"], strength=0.5)[0]
    tensors = load_file(str(comfy.base / "models" / "loras" / lora_files["sd15"]))
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    target = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    base = model.model.state_dict()[target].float()
    got = calculate_weight(patched.patches[target], base.clone(), target)
    expected = base + 0.5 * (4 / 8) * tensors[f"{module}.lora_up.weight"] @ tensors[f"{module}.lora_down.weight"]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def _error_of(comfy, call):
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value).__name__, str(caught.value)


def test_sdxl_lora_on_sd15_model_is_refused(comfy, sd15, lora_files):
    model, clip = sd15
    name, message = _error_of(comfy, lambda: _load(comfy, model, lora_files["sdxl"], clip=clip))
    assert name == "LoraFamilyMismatch"
    assert "'lcm-lora-sdxl.safetensors' is an SDXL LCM LoRA but the model is SD1.x" in message
    assert "Use lcm-lora-sdv1-5 instead" in message
    _assert_untouched(model)


def test_sd15_lora_on_sdxl_family_model_is_refused(comfy, vega, lora_files):
    name, message = _error_of(comfy, lambda: _load(comfy, vega, lora_files["sd15"]))
    assert name == "LoraFamilyMismatch"
    assert "is an SD1.x LCM LoRA but the model is Segmind Vega" in message and "Segmind-VegaRT" in message
    name, message = _error_of(comfy, lambda: _load(comfy, vega, lora_files["sdxl"]))
    assert name == "LoraFamilyMismatch" and "SDXL LCM LoRA but the model is Segmind Vega" in message
    _assert_untouched(vega)


def test_full_coverage_lcm_lora_with_convs_applies_on_vega(comfy, vega, tmp_path):
    """An LCM-LoRA-like file (attention, ff, resnet 3x3 convs, samplers, time embeddings; diffusers names)."""
    name = "lcm-full-vega.safetensors"
    loras.make_kohya_lora(vega, comfy.base / "models" / "loras" / name, rank=4, alpha=2, targets="lcm-full",
                          kind="lcm")
    expected = len(loras.lora_weight_names(vega, "lcm-full"))
    patched, _, report = _load(comfy, vega, name)
    assert len(patched.patches) == expected and f"Matched: {expected}/{expected}" in report, report
    conv = [k for k in patched.patches if k.endswith("in_layers.2.weight")]
    assert conv and vega.model.state_dict()[conv[0]].ndim == 4
    _assert_untouched(vega)


def test_vega_lora_on_vega_model_applies(comfy, vega, lora_files):
    patched, _, report = _load(comfy, vega, lora_files["vega"])
    assert len(patched.patches) == 140 and "Matched: 140/140" in report and "Kind: lcm" in report
    _assert_untouched(vega)


def test_renamed_module_is_refused_unless_partial_allowed(comfy, sd15, lora_files):
    model, _ = sd15
    name, message = _error_of(comfy, lambda: _load(comfy, model, lora_files["renamed"]))
    assert name == "LoraCoverageError"
    assert "1 of 40 modules match no weight" in message and "attn1_to_q_renamed" in message
    assert "allow_partial" in message
    _assert_untouched(model)
    patched, _, report = _load(comfy, model, lora_files["renamed"], allow_partial=True)
    assert len(patched.patches) == 39 and "PARTIAL: 1 modules NOT applied" in report


def test_text_encoder_modules_need_the_clip(comfy, sd15, lora_files):
    model, clip = sd15
    name, message = _error_of(comfy, lambda: _load(comfy, model, lora_files["with_text"]))
    assert name == "LoraCoverageError" and "connect the CLIP input" in message
    patched, patched_clip, report = _load(comfy, model, lora_files["with_text"], clip=clip)
    assert patched_clip is not clip and len(patched_clip.patcher.patches) == 72  # 12 layers × 6 linears
    assert "text encoder 72" in report and "Kind: style" in report
    assert "model_sampling" not in patched.object_patches  # a style LoRA leaves sampling alone
    assert clip.patcher.patches == {}


def test_loha_and_dora_are_applied_by_core_adapters(comfy, sd15, lora_files):
    model, _ = sd15
    patched, _, report = _load(comfy, model, lora_files["adapters"])
    adapters = {key.rsplit(".", 2)[-2]: patches[0][1].name for key, patches in patched.patches.items()}
    assert adapters == {"to_k": "loha", "to_v": "lora"} and "Matched: 2/2" in report
    dora_patch = patched.patches["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"][0][1]
    assert dora_patch.weights[4] is not None  # the DoRA scale reached core's LoRA adapter


def test_same_lcm_lora_is_not_applied_twice(comfy, sd15, lora_files):
    model, _ = sd15
    once = _load(comfy, model, lora_files["sd15"])[0]
    twice, _, report = _load(comfy, once, lora_files["sd15_copy"])  # same bytes, other name
    assert "already applied" in report and "not applied twice" in report
    assert all(len(patches) == 1 for patches in twice.patches.values())
    name, message = _error_of(comfy, lambda: _load(comfy, once, lora_files["sd15_other_lcm"]))
    assert name == "LoraAlreadyApplied" and "lcm-lora-sdv1-5.safetensors" in message
    styled = _load(comfy, once, lora_files["sd15_style"])[0]
    assert all(len(patches) == 2 for patches in styled.patches.values())


def _graph(lora_name: str, prefix: str = "lcm-lora") -> dict:
    """checkpoint → LCM-LoRA Loader (model + clip) → text encode → the pack's KSampler (LCM) → decode → save."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "lora": {"class_type": LOADER, "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": lora_name,
                                                  "strength": 1.0, "allow_partial": False}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["lora", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["lora", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "model": ["lora", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 1, "steps": 2, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def test_loader_in_real_graph_then_lcm_sampling(comfy, lora_files):
    images = comfy.run_prompt(_graph(lora_files["sd15"]))["save"]["images"]
    assert (comfy.base / "output" / images[0]["filename"]).stat().st_size > 0
    with pytest.raises(PromptFailed) as caught:
        comfy.run_prompt(_graph(lora_files["sdxl"]))
    assert caught.value.payload["node_id"] == "lora"
    assert caught.value.payload["exception_type"].endswith("LoraFamilyMismatch")
    assert "Use lcm-lora-sdv1-5 instead" in caught.value.payload["exception_message"]


@pytest.mark.server
def test_refusal_reaches_the_user_through_the_server(comfy_server):
    """On a real server the family refusal arrives as ComfyUI's execution_error with the typed message."""
    folder = comfy_server.base / "models" / "loras"
    loras.make_kohya_lora(SDXL_UNET_CONFIG, folder / "lcm-lora-sdxl.safetensors", rank=2, kind="lcm")
    status, answer = comfy_server.post_prompt(_graph("lcm-lora-sdxl.safetensors"))
    assert status == 200, answer
    history = comfy_server.wait_history(answer["prompt_id"])
    errors = [data for event, data in history["status"]["messages"] if event == "execution_error"]
    assert errors and errors[0]["node_id"] == "lora"
    assert errors[0]["exception_type"].endswith("LoraFamilyMismatch")
    assert "is an SDXL LCM LoRA but the model is SD1.x" in errors[0]["exception_message"]
    assert "Use lcm-lora-sdv1-5 instead" in errors[0]["exception_message"]


def _spelled(kohya: dict[str, torch.Tensor], spelling: str) -> dict[str, torch.Tensor]:
    """The same SD1.5 kohya (diffusers-name) tensors in another layout: PEFT ``unet.`` or legacy processors."""
    from comfy.utils import unet_to_diffusers

    dotted = {d[: -len(".weight")].replace(".", "_"): d[: -len(".weight")]
              for d in unet_to_diffusers(SD15_UNET_CONFIG) if d.endswith(".weight")}
    out = {}
    for key, tensor in kohya.items():
        module, _, suffix = key.partition(".")
        name = dotted[module.removeprefix("lora_unet_")]
        if suffix == "alpha":
            continue
        half = "down" if "down" in suffix else "up"
        if spelling == "peft":
            out[f"unet.{name}.lora_{'A' if half == 'down' else 'B'}.weight"] = tensor
        elif ".to_" in name:  # legacy attention processor spelling
            legacy = name.replace(".to_out.0", ".to_out").replace(".to_", ".processor.to_")
            out[f"unet.{legacy}_lora.{half}.weight"] = tensor
        else:
            out[f"unet.{name}.lora.{half}.weight"] = tensor
    return out


def test_all_layouts_of_one_lora_patch_identically(comfy, sd15):
    """kohya (diffusers names), PEFT ``unet.`` (+ adapter metadata) and legacy diffusers give the same weights."""
    import json

    from comfy.lora import calculate_weight

    model, _ = sd15
    folder = comfy.base / "models" / "loras"
    kohya = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, alpha=4, seed=11)
    metadata = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 4})}
    files = {"kohya": loras.save_lora(kohya, folder / "layout-kohya.safetensors"),
             "peft": loras.save_lora(_spelled(kohya, "peft"), folder / "layout-peft.safetensors", metadata),
             "legacy": loras.save_lora(_spelled(kohya, "legacy"), folder / "layout-legacy.safetensors")}
    base = model.model.state_dict()
    weights = {}
    for layout, path in files.items():
        patched, _, report = _load(comfy, model, path.name)
        assert "Matched: 40/40" in report, (layout, report)
        weights[layout] = {k: calculate_weight(p, base[k].float().clone(), k) for k, p in patched.patches.items()}
    assert weights["kohya"].keys() == weights["peft"].keys() == weights["legacy"].keys()
    for key, expected in weights["kohya"].items():
        assert not torch.equal(expected, base[key].float())
        assert torch.equal(weights["peft"][key], expected) and torch.equal(weights["legacy"][key], expected)


def test_bad_file_through_the_node_patches_nothing(comfy, sd15):
    model, _ = sd15
    path = comfy.base / "models" / "loras" / "half-downloaded.safetensors"
    full = loras.save_lora(loras.kohya_state_dict(SD15_UNET_CONFIG, rank=2), path).read_bytes()
    path.write_bytes(full[: len(full) // 3])
    name, message = _error_of(comfy, lambda: _load(comfy, model, path.name))
    assert name == "LoraFileError" and "half-downloaded.safetensors" in message and "download it again" in message
    _assert_untouched(model)


def test_peft_keys_core_drops_are_applied_by_the_pack(comfy, sd15):
    """Core's LoraLoaderModelOnly (0.3.75) drops PEFT ``unet.…to_q.lora_A`` keys (#9753); the pack applies all."""
    import json

    model, _ = sd15
    name = "peft-unet-prefix.safetensors"
    kohya = loras.kohya_state_dict(SD15_UNET_CONFIG, rank=4, alpha=4, seed=12)
    metadata = {"lora_adapter_metadata": json.dumps({"unet.r": 4, "unet.lora_alpha": 4})}
    loras.save_lora(_spelled(kohya, "peft"), comfy.base / "models" / "loras" / name, metadata)
    (core,) = comfy.run_node("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=1.0)
    ours = _load(comfy, model, name)[0]
    assert len(ours.patches) == 40
    assert len(core.patches) == 8  # only the 4 stacks × proj_in/proj_out reach core; 32 attention layers dropped
    assert set(core.patches) < set(ours.patches)
