"""KSamplerLCM reuses its LCM-patched model clone while the input model is unchanged (real ComfyUI in-process).

Observable: the ModelPatcher ComfyUI holds as loaded for the model's weights
(``comfy.model_management.current_loaded_models``) and the pack's clone cache. A stale clone must never be used
after the input model changes (new LoRA, other LCM constants, in-place patches), and nothing may keep an input
model alive.
"""
from __future__ import annotations

import gc
import sys
import uuid
import weakref

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.host import EXECUTOR_CACHE_ARGS, ServerStub
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from safetensors.torch import load_file

SEED = 42


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]


@pytest.fixture(scope="module")
def lora_name(comfy):
    name = "reuse-test-lcm.safetensors"
    loras.make_kohya_lora(SD15_UNET_CONFIG, comfy.base / "models" / "loras" / name, rank=4, alpha=4, kind="lcm")
    return name


def _conditioning(seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(1, 77, 768, generator=generator), {}]]


def _ksampler(comfy, model, sampler="lcm", steps=2):
    (out,) = comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=_conditioning(), negative=_conditioning(9),
                            latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=SEED, steps=steps, cfg=1.0,
                            sampler=sampler, gamma=0.3, denoise=1.0)
    return out["samples"]


def _loaded_patcher(base_model):
    """The ModelPatcher ComfyUI currently tracks as loaded for ``base_model``'s weights."""
    import comfy.model_management as model_management

    (patcher,) = [loaded.model for loaded in model_management.current_loaded_models
                  if loaded.model is not None and loaded.model.model is base_model]
    return patcher


def _pack_clone_cache():
    """The pack's ``comfy_clone_cache`` module as ComfyUI imported it (under the pack's mangled name)."""
    (module,) = [m for name, m in list(sys.modules.items())
                 if name.endswith(".host.comfy_clone_cache") and not name.startswith("lcm_lora_pack.")]
    return module


def _sampling_class(patcher):
    return type(patcher.get_model_object("model_sampling")).__name__


def test_two_runs_on_one_model_use_the_same_patched_clone_and_agree(comfy, sd15):
    before = sd15.get_model_object("model_sampling")
    first = _ksampler(comfy, sd15)
    clone = _loaded_patcher(sd15.model)
    second = _ksampler(comfy, sd15)
    assert _loaded_patcher(sd15.model) is clone, "a new clone was made for an unchanged input model"
    assert clone is not sd15 and _sampling_class(clone) == "LCMModelSampling"
    assert _pack_clone_cache().cached_clone_count(sd15) == 1
    assert torch.equal(first, second)
    assert sd15.get_model_object("model_sampling") is before and "model_sampling" not in sd15.object_patches
    assert sd15.get_model_object("model_sampling").sigmas.numel() == 1000, "input model was mutated"


def test_lcm_and_tcd_keep_one_clone_each(comfy, sd15):
    (lcm_patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                    timestep_scaling=10.0, sigma_data=0.5)
    _ksampler(comfy, lcm_patched, sampler="tcd")
    tcd_clone = _loaded_patcher(sd15.model)
    _ksampler(comfy, lcm_patched, sampler="lcm")  # already LCM-patched: sampled as is, nothing cached
    assert _loaded_patcher(sd15.model) is lcm_patched
    _ksampler(comfy, lcm_patched, sampler="tcd")
    assert _loaded_patcher(sd15.model) is tcd_clone and _sampling_class(tcd_clone) == "LCMGridSampling"
    assert _pack_clone_cache().cached_clone_count(lcm_patched) == 1


def _run(comfy, executor, prompt):
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok and not node_errors, (error, node_errors)
    executor.execute(prompt, str(uuid.uuid4()), {"client_id": "harness"}, outputs)
    assert executor.success, executor.status_messages
    entry = executor.history_result["outputs"]["save"]["latents"][0]
    latent = load_file(str(comfy.base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]
    model = _cached_outputs(executor, "ckpt")[0][0]
    return latent, model, _loaded_patcher(model.model)


def _cached_outputs(executor, node_id: str):
    """The executor's cached outputs of a node (its cache's ``get`` is a coroutine from ComfyUI 0.33 on)."""
    import asyncio
    import inspect

    entry = executor.caches.outputs.get(node_id)
    if inspect.iscoroutine(entry):
        entry = asyncio.run(entry)
    return entry.outputs


def _graph(seed):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["pos", 0], "latent_image": ["empty", 0],
            "seed": seed, "steps": 2, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "reuse"}},
    }


def test_queued_prompts_on_one_executor_reuse_the_clone(comfy):
    """The server's case: the executor caches the checkpoint's MODEL and re-runs only KSamplerLCM."""
    executor = comfy.execution.PromptExecutor(ServerStub(), cache_type=comfy.execution.CacheType.CLASSIC,
                                              cache_args=dict(EXECUTOR_CACHE_ARGS))
    first, model, clone = _run(comfy, executor, _graph(seed=1))
    other, model_again, clone_again = _run(comfy, executor, _graph(seed=2))
    same, model_last, clone_last = _run(comfy, executor, _graph(seed=1))
    assert model_again is model and model_last is model, "the executor did not hand the cached model"
    assert clone_again is clone and clone_last is clone and clone is not model
    assert torch.equal(first, same) and not torch.equal(first, other)


def test_a_lora_on_the_input_model_is_not_served_a_stale_clone(comfy, sd15, lora_name):
    plain = _ksampler(comfy, sd15)
    (with_lora,) = comfy.run_node("LoraLoaderModelOnly", model=sd15, lora_name=lora_name, strength_model=1.0)
    lora_latent = _ksampler(comfy, with_lora)
    (reference_model,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=with_lora, original_inference_steps=50,
                                        timestep_scaling=10.0, sigma_data=0.5)
    assert torch.equal(lora_latent, _ksampler(comfy, reference_model))  # patched by hand: no cache involved
    assert not torch.equal(lora_latent, plain)


def test_patches_added_in_place_invalidate_the_clone(comfy, sd15, lora_name):
    """A caller that patches the input object itself (against ComfyUI's rules) still gets a fresh clone."""
    (with_lora,) = comfy.run_node("LoraLoaderModelOnly", model=sd15, lora_name=lora_name, strength_model=1.0)
    model = sd15.clone()
    plain = _ksampler(comfy, model)
    stale = _loaded_patcher(sd15.model)
    model.add_patches({key: entries[0][1] for key, entries in with_lora.patches.items()}, 1.0)
    patched = _ksampler(comfy, model)
    assert _loaded_patcher(sd15.model) is not stale
    assert torch.equal(patched, _ksampler(comfy, with_lora)) and not torch.equal(patched, plain)


def test_other_lcm_constants_in_place_move_the_tcd_grid(comfy, sd15):
    def sampling(steps):
        (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=steps,
                                    timestep_scaling=10.0, sigma_data=0.5)
        return patched

    on_50, on_25 = sampling(50), sampling(25)
    model = sd15.clone()
    model.add_object_patch("model_sampling", on_50.get_model_object("model_sampling"))
    first = _ksampler(comfy, model, sampler="tcd", steps=4)
    model.add_object_patch("model_sampling", on_25.get_model_object("model_sampling"))
    moved = _ksampler(comfy, model, sampler="tcd", steps=4)
    assert torch.equal(first, _ksampler(comfy, on_50, sampler="tcd", steps=4))
    assert torch.equal(moved, _ksampler(comfy, on_25, sampler="tcd", steps=4))
    assert not torch.equal(first, moved)


def test_the_cache_keeps_no_input_model_alive(comfy, sd15):
    cache = _pack_clone_cache()
    model = sd15.clone()
    _ksampler(comfy, model)
    clone = _loaded_patcher(sd15.model)
    assert cache.cached_clone_count(model) == 1 and clone.parent is sd15
    model_ref, clone_ref = weakref.ref(model), weakref.ref(clone)
    del model, clone
    gc.collect()
    assert model_ref() is None and clone_ref() is None
    assert _loaded_patcher(sd15.model) is sd15, "ComfyUI did not fall back to the input's parent"
