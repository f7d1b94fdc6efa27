"""Degrade, never crash (issues 21, 29): each ComfyUI contact of ``host/contract/`` changed in a simulated
future ComfyUI (the core symbol monkeypatched: renamed, removed, a new required argument, another return shape,
another module). The pack still imports, and the node gives core's result with one report line, or a pack error
naming the contact -- never a silently different image. Plus the house rules the contract rests on."""
from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.host import contract
from lcm_lora_pack.host.comfy_model_sampling import lcm_sampling_info, with_lcm_sampling

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ["host", "nodes", "lora", "samplers", "distill", "__init__.py", "errors.py"]
SAMPLER = "LCMPack_KSamplerLCM"


@pytest.fixture(scope="module")
def sd15(comfy):
    model, clip, vae = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:3]
    (positive,) = comfy.run_node("CLIPTextEncode", text="a cat", clip=clip)
    (latent,) = comfy.run_node("EmptyLatentImage", width=64, height=64, batch_size=1)
    return types.SimpleNamespace(model=model, clip=clip, vae=vae, positive=positive, latent=latent)


@pytest.fixture(scope="module")
def lora_names(comfy):
    folder = comfy.base / "models" / "loras"
    lcm = loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "contract-lcm.safetensors", rank=4, alpha=2, kind="lcm")
    style = loras.make_kohya_lora(SD15_UNET_CONFIG, folder / "contract-style.safetensors", rank=2, seed=7)
    return lcm.name, style.name


def report_of(output) -> str:
    return output.ui.as_dict()["text"][0]


def contact_lines(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith(contract.LINE_PREFIX)]


def sample(comfy, sd15, model=None, **inputs):
    """KSampler (LCM) executed directly (its NodeOutput: latent and report)."""
    values = {"seed": 3, "steps": 2, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0} | inputs
    return comfy.node_class(SAMPLER).execute(model=model or sd15.model, positive=sd15.positive, negative=None,
                                             latent_image=sd15.latent, **values)


def merged_weights(patcher) -> dict[str, torch.Tensor]:
    import comfy.model_management as model_management

    model_management.load_models_gpu([patcher], force_full_load=True)
    weights = {k: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith("diffusion_")}
    model_management.unload_all_models()
    return weights


def core_lora_chain(comfy, model, items) -> dict[str, torch.Tensor]:
    """Core's own result: one LoraLoaderModelOnly per LoRA, in order."""
    for name, weight in items:
        (model,) = comfy.run_node("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=weight)
    return merged_weights(model)


def mixer(comfy, model, items):
    stack = None
    for name, weight in items:
        (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=name, weight=weight, role="style", stack=stack)
    return comfy.node_class("LCMPack_LoraMixer").execute(model=model, stack=stack, style_normalization="none",
                                                         allow_partial=False)


def assert_same_weights(ours: dict, core: dict) -> None:
    assert ours.keys() == core.keys()
    for key in core:
        assert torch.equal(ours[key], core[key]), key


# ---- the house rules ------------------------------------------------------------------------------------


def test_only_the_contract_module_matches_module_name_strings():
    found = subprocess.run(["grep", "-rnE", "__module__|_function_id", *PRODUCT], capture_output=True, text=True,
                           cwd=REPO).stdout.splitlines()
    assert all(line.split(":", 1)[0].startswith("host/contract/") for line in found), found


def test_every_clone_attribute_of_this_comfyui_was_decided_on(sd15):
    """A new ComfyUI that adds an attribute to ModelPatcher.clone() fails here until it is put in STATE (it is
    inherited sampling state: fingerprinted) or NOT_STATE (with the reason it is not)."""
    from lcm_lora_pack.host.comfy_clone_cache import NOT_STATE, STATE, patcher_state

    clone = sd15.model.clone()
    undecided = set(vars(clone)) - set(STATE) - set(NOT_STATE)
    assert not undecided, f"ModelPatcher attributes nobody decided on for the clone fingerprint: {undecided}"
    assert patcher_state(clone) == patcher_state(clone)
    clone.model_options["lcmpack_probe"] = 1
    changed = patcher_state(clone)
    clone.probe_attribute = object()  # an attribute a future ComfyUI adds is fingerprinted by default
    assert patcher_state(clone) != changed


# ---- samplers ---------------------------------------------------------------------------------------------


def test_sample_lcm_renamed_pack_still_imports_with_every_node(comfy, monkeypatch):
    import comfy.k_diffusion.sampling as k_sampling

    before = [cls.define_schema().node_id for cls in importlib.import_module("lcm_lora_pack.nodes").NODE_CLASSES]
    monkeypatch.setattr(k_sampling, "sample_lcm_v2", k_sampling.sample_lcm, raising=False)
    monkeypatch.delattr(k_sampling, "sample_lcm")
    for name in [name for name in sys.modules if name == "lcm_lora_pack" or name.startswith("lcm_lora_pack.")]:
        monkeypatch.delitem(sys.modules, name)
    pack = importlib.import_module("lcm_lora_pack")
    extension = asyncio.run(pack.comfy_entrypoint())
    after = [cls.define_schema().node_id for cls in asyncio.run(extension.get_node_list())]
    assert after == before and len(after) >= 11
    fast_path = importlib.import_module("lcm_lora_pack.host.comfy_fast_path")
    assert fast_path.lcm_sampler_kind(k_sampling.sample_lcm_v2) is None  # core's LCM: not on the fast path
    kdiff = importlib.import_module("lcm_lora_pack.host.comfy_k_diffusion")
    assert fast_path.lcm_sampler_kind(kdiff.sample_lcm_exact) == "pack lcm"


def test_prepare_callback_renamed_samples_without_a_preview(comfy, sd15, monkeypatch):
    import latent_preview

    expected = sample(comfy, sd15)
    monkeypatch.delattr(latent_preview, "prepare_callback")
    got = sample(comfy, sd15)
    assert torch.equal(got.result[0]["samples"], expected.result[0]["samples"])
    (only,) = contact_lines(report_of(got))
    assert "preview_callback" in only and not contact_lines(report_of(expected))


def test_progress_bar_flag_renamed_samples_without_a_progress_bar(comfy, sd15, monkeypatch):
    import comfy.utils as comfy_utils

    expected = sample(comfy, sd15)
    monkeypatch.delattr(comfy_utils, "PROGRESS_BAR_ENABLED")
    got = sample(comfy, sd15)
    assert torch.equal(got.result[0]["samples"], expected.result[0]["samples"])
    (only,) = contact_lines(report_of(got))
    assert "PROGRESS_BAR_ENABLED" in only


def test_sample_custom_with_a_new_required_keyword_samples_through_core_guider(comfy, sd15, monkeypatch):
    import comfy.sample as comfy_sample

    expected = sample(comfy, sd15)
    original = comfy_sample.sample_custom

    def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=None,
                      callback=None, disable_pbar=False, seed=None, *, new_required):
        return original(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask, callback,
                        disable_pbar, seed)

    monkeypatch.setattr(comfy_sample, "sample_custom", sample_custom)
    got = sample(comfy, sd15)
    assert torch.equal(got.result[0]["samples"], expected.result[0]["samples"])
    (only,) = contact_lines(report_of(got))
    assert "sample_custom" in only and "CFGGuider" in only


def test_core_lcm_sampling_classes_in_another_module_keep_the_image(comfy, sd15, monkeypatch):
    """Core's ModelSamplingDiscrete(lcm) classes defined in another module (still what core's node uses): the
    pack recognises them by identity and keeps core's LCM sampling -- the same latent as before."""
    node = comfy.node_class("ModelSamplingDiscrete")
    (core_lcm,) = node().patch(sd15.model, "lcm", False)
    expected = sample(comfy, sd15, model=core_lcm)
    namespace = node.patch.__globals__
    for name in ("LCM", "ModelSamplingDiscreteDistilled"):
        monkeypatch.setattr(namespace[name], "__module__", "comfy.model_sampling_lcm")
    got = sample(comfy, sd15, model=core_lcm)
    assert torch.equal(got.result[0]["samples"], expected.result[0]["samples"])
    sampling = core_lcm.get_model_object("model_sampling")
    assert lcm_sampling_info(sampling).source == "core" and with_lcm_sampling(core_lcm) is core_lcm


def test_core_lcm_sampling_classes_imported_by_another_pack_keep_the_image(comfy, sd15):
    """ComfyUI loads ``comfy_extras/nodes_model_advanced.py`` for its ModelSamplingDiscrete node under a path-named
    module; a pack that imports ``comfy_extras.nodes_model_advanced`` (AnimateDiff-Evolved: its ``lcm`` beta
    schedules) gets a second copy of core's classes. Its LCM sampling is core's too: the pack keeps it (issue 29.5),
    and KSampler (LCM) samples what it samples on the node's object."""
    import comfy_extras.nodes_model_advanced as imported

    node = comfy.node_class("ModelSamplingDiscrete")
    assert node.patch.__globals__["LCM"] is not imported.LCM  # two copies of the classes (the premise)

    class EvolvedLCM(imported.ModelSamplingDiscreteDistilled, imported.LCM):  # as ADE builds its `lcm` schedule
        pass

    model = sd15.model.clone()
    model.add_object_patch("model_sampling", EvolvedLCM(sd15.model.model.model_config))
    info = lcm_sampling_info(model.get_model_object("model_sampling"))
    assert (info.original_inference_steps, info.boundary, info.source) == (50, True, "core")
    assert with_lcm_sampling(model) is model
    (core_lcm,) = node().patch(sd15.model, "lcm", False)
    assert torch.equal(sample(comfy, sd15, model=model).result[0]["samples"],
                       sample(comfy, sd15, model=core_lcm).result[0]["samples"])


def test_core_lcm_sampling_classes_gone_is_a_pack_error_naming_the_contact(comfy, sd15, monkeypatch):
    node = comfy.node_class("ModelSamplingDiscrete")
    (core_lcm,) = node().patch(sd15.model, "lcm", False)
    for name in ("LCM", "ModelSamplingDiscreteDistilled"):
        monkeypatch.delitem(node.patch.__globals__, name)
    with pytest.raises(ValueError, match="core_lcm_sampling") as caught:
        sample(comfy, sd15, model=core_lcm)
    assert type(caught.value).__name__ == "ContactError"


def _rename_class_obj(monkeypatch):
    """WrapperExecutor keeps the wrapped instance under another name (core's own calls still work)."""
    import comfy.patcher_extension as extensions

    original_init = extensions.WrapperExecutor.__init__

    def init(self, original, class_obj, wrappers, idx):
        original_init(self, original, class_obj, wrappers, idx)
        self.instance = self.__dict__.pop("class_obj")

    def create_next(self):
        if self.instance is None:
            return extensions.WrapperExecutor.new_executor(self.original, self.wrappers, self.idx + 1)
        return extensions.WrapperExecutor.new_class_executor(self.original, self.instance, self.wrappers, self.idx + 1)

    monkeypatch.setattr(extensions.WrapperExecutor, "__init__", init)
    monkeypatch.setattr(extensions.WrapperExecutor, "_create_next_executor", create_next)


def test_wrapper_executor_without_class_obj_runs_core_sampling(comfy, sd15, monkeypatch, caplog):
    expected = sample(comfy, sd15)
    (fast,) = comfy.run_node("LCMPack_LCMFastPath", model=sd15.model, mode="cuda_graph")
    _rename_class_obj(monkeypatch)
    got = sample(comfy, sd15, model=fast)
    assert torch.equal(got.result[0]["samples"], expected.result[0]["samples"])
    assert [r for r in caplog.records if "wrapped_sampler" in r.getMessage()]


def test_changed_sampler_internals_raise_the_fallback_signal(monkeypatch):
    """The fast path's contacts: each raises ContactMismatch (its caller then runs core's sampler)."""
    import comfy.k_diffusion.sampling as k_sampling

    monkeypatch.setattr(k_sampling, "default_noise_sampler", lambda x, seed, *, new_required: None)
    with pytest.raises(contract.ContactMismatch, match="core_noise_sampler"):
        contract.core_noise_sampler(torch.zeros(1), 1)
    with pytest.raises(contract.ContactMismatch, match="sampler_max_denoise"):
        contract.sampler_max_denoise(types.SimpleNamespace(max_denoise=lambda model_wrap: True), None, None)
    monkeypatch.delitem(sys.modules, "comfy_api.torch_helpers.torch_compile", raising=False)
    monkeypatch.setitem(sys.modules, "comfy_api.torch_helpers.torch_compile", types.ModuleType("moved"))
    with pytest.raises(contract.ContactMismatch, match="torch_compile_wrapper"):
        contract.torch_compile_wrapper({})
    assert "first_stage_model" in contract.vae_decode_mismatch(types.SimpleNamespace())
    chunked = types.SimpleNamespace(**dict.fromkeys(contract.VAE_DECODE_PARTS[1:]), first_stage_model=types.
                                    SimpleNamespace(decode=print, comfy_has_chunked_io=True))
    assert "preallocated" in contract.vae_decode_mismatch(chunked)
    assert "guider_parts" in contract.guider_mismatch(types.SimpleNamespace(conds=[], inner_model=None))
    with pytest.raises(contract.ContactMismatch, match="batch_transformer_options"):
        contract.batch_transformer_options(types.SimpleNamespace(), {}, [0], [1], torch.ones(1))
    with pytest.raises(contract.ContactMismatch, match="cond_batch_fits"):  # memory_required re-signed
        contract.cond_batch_fits(types.SimpleNamespace(memory_required=lambda shape: 0), torch.zeros(1, 4, 8, 8), 2, {})
    with pytest.raises(contract.ContactMismatch, match="batched_cond_inputs"):
        contract.batched_cond_inputs([{"model_conds": {"c_crossattn": torch.zeros(1)}}] * 2, 1)
    assert contract.fixed_sampler_kind(print) is None


def test_fast_path_falls_back_when_the_euler_sampler_is_gone(comfy, monkeypatch):
    """core's sample_euler renamed: a KSAMPLER around the old function is no longer recognised (core samples)."""
    import comfy.k_diffusion.sampling as sampling

    euler = sampling.sample_euler
    assert contract.fixed_sampler_kind(euler) == ("core euler", "euler")
    monkeypatch.delattr(sampling, "sample_euler")
    assert contract.fixed_sampler_kind(euler) is None


def test_fast_path_sampler_contacts_changed_raise_the_fallback_signal(comfy, sd15, monkeypatch):
    """The contacts of the fast path's new loops: core's get_ancestral_step re-signed, CONST gone, a model with its
    own inpainting blend -- each raises ContactMismatch (core samples); the samplers are recognised by identity."""
    import comfy.k_diffusion.sampling as sampling
    import comfy.model_sampling

    for name, kind in (("sample_euler_ancestral", "core euler_ancestral"), ("sample_dpmpp_2m", "core dpmpp_2m")):
        assert contract.fixed_sampler_kind(getattr(sampling, name)) == (kind, kind.split()[1])
    kdiff = importlib.import_module("lcm_lora_pack.host.comfy_k_diffusion")
    assert contract.fixed_sampler_kind(kdiff.sample_tcd) == ("pack tcd", "tcd")
    base_model = sd15.model.model
    assert contract.inpaint_scaling(base_model) == base_model.scale_latent_inpaint
    assert contract.ancestral_runs_rf(base_model) is False
    own_blend = type("OwnBlend", (type(base_model),), {"scale_latent_inpaint": lambda self, **kw: kw["latent_image"]})
    with pytest.raises(contract.ContactMismatch, match="inpaint_scaling"):
        contract.inpaint_scaling(own_blend.__new__(own_blend))
    monkeypatch.setattr(sampling, "get_ancestral_step", lambda sigma_from, sigma_to: (sigma_to, 0.0))
    with pytest.raises(contract.ContactMismatch, match="ancestral_step"):
        contract.ancestral_step(torch.tensor(2.0), torch.tensor(1.0))
    monkeypatch.delattr(comfy.model_sampling, "CONST")
    with pytest.raises(contract.ContactMismatch, match="ancestral_runs_rf"):
        contract.ancestral_runs_rf(base_model)


def test_changed_wrapper_layout_is_read_through_core(monkeypatch):
    """Another layout of the wrappers dict: core's own get_all_wrappers decides (a wrapper named ``kind:?``)."""
    import comfy.patcher_extension as extensions

    kind = extensions.WrappersMP.APPLY_MODEL
    assert contract.wrapper_names({"transformer_options": {"wrappers": {kind: {"k": [print]}}}}, [kind]) == [
        f"{kind}:k"]
    monkeypatch.setattr(extensions, "get_all_wrappers", lambda *args, **kwargs: [print])
    assert contract.wrapper_names({"transformer_options": {"wrappers": [(kind, print)]}}, [kind]) == [f"{kind}:?"]


def test_changed_core_samplers_and_classes(sd15, monkeypatch):
    """Core's Euler gone: the presets that run it raise a pack error naming it; a sampler model without
    inner_model.inner_model: a pack error; core's model-sampling and model-config classes in another module are
    still recognised (by identity: the distillation teacher's prediction type, the model family)."""
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.model_sampling as model_sampling
    import comfy.supported_models as supported_models
    from lcm_lora_pack.distill.comfy_bridge import prediction_type
    from lcm_lora_pack.host.comfy_apply import model_family

    monkeypatch.delattr(k_sampling, "sample_euler")
    with pytest.raises(ValueError, match="core_k_sampler"):
        contract.require_core_k_sampler("sample_euler")
    import comfy.samplers as samplers

    monkeypatch.setattr(samplers.KSAMPLER, "max_denoise", lambda self, model_wrap, sigmas, new_required: True)
    with pytest.raises(ValueError, match="max_denoise_override"):
        contract.check_max_denoise_override()
    with pytest.raises(ValueError, match="sampler_base_model"):
        contract.sampler_base_model(types.SimpleNamespace(inner_model=None))
    for cls in (model_sampling.EPS, model_sampling.ModelSamplingDiscrete, supported_models.SD15):
        monkeypatch.setattr(cls, "__module__", "comfy.moved_elsewhere")
    assert prediction_type(sd15.model.get_model_object("model_sampling")) == "epsilon"
    assert model_family(sd15.model) == "sd1.x"


def test_load_lora_with_a_new_required_argument_is_a_pack_error_naming_it(monkeypatch):
    import comfy.lora as comfy_lora

    load = comfy_lora.load_lora
    monkeypatch.setattr(comfy_lora, "load_lora", lambda lora, to_load, log_missing=True, *, device: load(lora, to_load))
    with pytest.raises(ValueError, match="core_lora_patches"):
        contract.core_lora_patches({}, {})


# ---- LoRA -------------------------------------------------------------------------------------------------


def test_model_lora_keys_unet_renamed_is_a_pack_error_naming_the_contact(comfy, sd15, lora_names, monkeypatch):
    import comfy.lora as comfy_lora

    monkeypatch.setattr(comfy_lora, "model_lora_keys_unet_v2", comfy_lora.model_lora_keys_unet, raising=False)
    monkeypatch.delattr(comfy_lora, "model_lora_keys_unet")
    with pytest.raises(ValueError, match="lora_key_maps") as caught:
        comfy.node_class("LCMPack_LCMLoraLoader").execute(model=sd15.model, lora_name=lora_names[1])
    assert type(caught.value).__name__ == "ContactError"


def _grow_lora_tuple(monkeypatch):
    """Core's LoRAAdapter weights gain a 7th field (load builds it, calculate_weight requires it)."""
    from comfy.weight_adapter.lora import LoRAAdapter

    load, calculate = LoRAAdapter.load.__func__, LoRAAdapter.calculate_weight

    def grown_load(cls, *args, **kwargs):
        adapter = load(cls, *args, **kwargs)
        return None if adapter is None else cls(adapter.loaded_keys, (*adapter.weights, "new field"))

    def grown_calculate(self, weight, key, strength, strength_model, offset, function,
                        intermediate_dtype=torch.float32, original_weight=None):
        if len(self.weights) != 7:
            raise ValueError(f"LoRAAdapter weights have {len(self.weights)} fields, 7 expected")
        six = type(self)(self.loaded_keys, self.weights[:6])
        return calculate(six, weight, key, strength, strength_model, offset, function, intermediate_dtype,
                         original_weight)

    monkeypatch.setattr(LoRAAdapter, "load", classmethod(grown_load))
    monkeypatch.setattr(LoRAAdapter, "calculate_weight", grown_calculate)


def test_lora_adapter_tuple_grown_loader_uses_core_load_lora(comfy, sd15, lora_names, monkeypatch):
    _grow_lora_tuple(monkeypatch)
    core = core_lora_chain(comfy, sd15.model, [(lora_names[1], 0.8)])
    output = comfy.node_class("LCMPack_LCMLoraLoader").execute(model=sd15.model, lora_name=lora_names[1],
                                                               strength=0.8)
    assert_same_weights(merged_weights(output.result[0]), core)
    (only,) = contact_lines(report_of(output))
    assert "lora_patches" in only and "7 fields" in only


def _calculate_weight_with_new_keyword(monkeypatch):
    """Core passes adapters a new keyword (and its adapters take it)."""
    import comfy.lora as comfy_lora
    from comfy.weight_adapter.lora import LoRAAdapter

    calculate = LoRAAdapter.calculate_weight

    def new_calculate(self, weight, key, strength, strength_model, offset, function, intermediate_dtype=torch.float32,
                      original_weight=None, *, new_keyword):
        return calculate(self, weight, key, strength, strength_model, offset, function, intermediate_dtype,
                         original_weight)

    def core_calculate_weight(patches, weight, key, intermediate_dtype=torch.float32, original_weights=None):
        for strength, adapter, strength_model, offset, function in patches:
            assert offset is None and strength_model == 1.0
            weight = adapter.calculate_weight(weight, key, strength, strength_model, offset,
                                              function or (lambda a: a), intermediate_dtype, original_weights,
                                              new_keyword=True)
        return weight

    monkeypatch.setattr(LoRAAdapter, "calculate_weight", new_calculate)
    monkeypatch.setattr(comfy_lora, "calculate_weight", core_calculate_weight)


def _rename_adapter_base(monkeypatch):
    """``WeightAdapterBase`` renamed: core's own modules use the new name (a namespace with it), the old is gone."""
    import comfy.lora as comfy_lora
    import comfy.weight_adapter as weight_adapter

    base = weight_adapter.WeightAdapterBase
    renamed = types.SimpleNamespace(**{k: v for k, v in vars(weight_adapter).items() if not k.startswith("__")})
    monkeypatch.setattr(comfy_lora, "weight_adapter", renamed)
    monkeypatch.setattr(weight_adapter, "AdapterBase", base, raising=False)
    monkeypatch.delattr(weight_adapter, "WeightAdapterBase")


def test_lora_adapter_tuple_grown_mixer_is_unchanged(comfy, sd15, lora_names, monkeypatch):
    """The mixer's own adapter does not read core's LoRAAdapter tuple: same weights, no contact line."""
    items = [(lora_names[0], 1.0), (lora_names[1], 0.7)]
    expected = merged_weights(mixer(comfy, sd15.model, items).result[0])
    _grow_lora_tuple(monkeypatch)
    output = mixer(comfy, sd15.model, items)
    assert_same_weights(merged_weights(output.result[0]), expected)
    assert not contact_lines(report_of(output))


@pytest.mark.parametrize("change", [_calculate_weight_with_new_keyword, _rename_adapter_base])
def test_changed_adapter_contract_mixer_applies_core_patches(comfy, sd15, lora_names, monkeypatch, change):
    items = [(lora_names[0], 1.0), (lora_names[1], 0.7)]
    change(monkeypatch)
    core = core_lora_chain(comfy, sd15.model, items)
    output = mixer(comfy, sd15.model, items)
    assert_same_weights(merged_weights(output.result[0]), core)
    lines = contact_lines(report_of(output))
    assert len(lines) == 1 and "weight_adapter_base" in lines[0], lines


# ---- Dynamic VRAM (issue 29 item 2) -----------------------------------------------------------------------


def test_mixed_adapter_through_core_dynamic_patch_path_equals_the_full_load(comfy, sd15, lora_names):
    """Drive what ModelPatcherDynamic runs per module (0.33: ``LowVramPatch.memory_required`` / ``prepare`` →
    ``comfy_lora.prefetch_prepared_value`` rebuilds each adapter as ``type(a)(loaded_keys, weights)``, then
    ``comfy_lora.calculate_weight`` on the prepared patches) and compare with the non-dynamic merge."""
    import comfy.lora as comfy_lora
    import comfy.model_patcher as comfy_model_patcher

    patch_class = comfy_model_patcher.LowVramPatch
    if not hasattr(patch_class, "prepare"):
        pytest.skip("this ComfyUI has no Dynamic VRAM prefetch (LowVramPatch.prepare: 0.33+)")
    model = mixer(comfy, sd15.model, [(lora_names[0], 1.0), (lora_names[1], 0.7)]).result[0]
    key = next(k for k in model.patches if k.endswith("attn1.to_q.weight"))
    weight = model.model.state_dict()[key].detach().clone()
    full = comfy_lora.calculate_weight(model.patches[key], weight.clone(), key)
    lowvram = patch_class(key, model.patches)
    destination = torch.empty(lowvram.memory_required(), dtype=torch.uint8)
    prepared = lowvram.prepare(destination, None)
    assert type(prepared[0][1]) is type(model.patches[key][0][1])
    assert torch.equal(lowvram(weight.clone()), full)
    assert not torch.equal(full, weight)


def test_root_patcher_follows_core_clones_and_stops_where_there_is_no_parent(sd15):
    """The fast path's drop finalizer sits on the clone chain's root (core's ``clone()`` sets ``n.parent``); a
    patcher without ``parent`` (a changed core) is its own root: its state is then released with that clone."""
    root = sd15.model
    assert contract.root_patcher(root.clone().clone()) is contract.root_patcher(root)
    assert contract.root_patcher(root.clone()) is not root.clone()
    orphan = types.SimpleNamespace()
    assert contract.root_patcher(orphan) is orphan
