"""Issue 23, memory the host can see, on the CPU inside real ComfyUI: the fast path's captured loops and compiled
modules are freed when ComfyUI unloads the model, and a capture first asks ComfyUI's model management for the
room it will hold.

Prompts run through ``validate_prompt`` + one ``PromptExecutor`` kept across prompts, as the server keeps it
(node outputs of unchanged inputs reused: the same checkpoint, the same fast-path clone), with the node's settings
on the CPU stand-in of a CUDA graph (``EagerReplayBackend``, as tests/test_realtime_live.py). The unload is the
one the server's ``/free`` and a model load that needs room make: ``comfy.model_management.unload_all_models()``
/ ``free_memory``. The GPU numbers (pools at batch 4, the decode after) are the bench's (BENCHMARKS.md §12).
"""
from __future__ import annotations

import gc
import importlib
import sys
import types
import weakref

import pytest
import torch
from conftest import SD15_CKPT
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def mm(comfy):
    return importlib.import_module("comfy.model_management")


@pytest.fixture
def pack(comfy, monkeypatch):
    """The pack as ComfyUI imported it (the node's modules): the node's settings on the CPU stand-in, and every
    call of the contract's ``free_device_memory`` recorded (then passed on to core)."""
    node_module = sys.modules[comfy.node_class("LCMPack_LCMFastPath").__module__]
    root = node_module.__name__.rsplit(".", 2)[0]
    settings = node_module.FastPathSettings
    monkeypatch.setattr(node_module, "FastPathSettings",
                        lambda **kw: settings(**{"backend": "eager_replay", **kw, **pack_settings}))
    contract = sys.modules[f"{root}.host.contract"]
    requests, ask = [], contract.free_device_memory

    def recorded(nbytes, device, keep=()):
        requests.append((nbytes, device, list(keep)))
        return ask(nbytes, device, keep)

    monkeypatch.setattr(contract, "free_device_memory", recorded)
    pack_settings.clear()
    return types.SimpleNamespace(fp=sys.modules[f"{root}.host.comfy_fast_path"], requests=requests,
                                 settings=pack_settings)


pack_settings: dict = {}  # extra FastPathSettings of the node (the compiled test's backend)


def _prompt(seed: int, mode: str | None) -> dict:
    """Checkpoint → ModelSamplingLCM → [LCM Fast Path] → KSampler (LCM) 4 steps → SaveLatent."""
    model = ["3", 0] if mode else ["2", 0]
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "2": {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {"model": ["1", 0], "original_inference_steps": 50,
                                                                   "timestep_scaling": 10.0, "sigma_data": 0.5}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a live painting", "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "model": model, "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": seed,
            "steps": 4, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": f"memory-{seed}"}},
    }
    if mode:
        prompt["3"] = {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": ["2", 0], "mode": mode}}
    return prompt


def _latent(comfy, executor, seed: int, mode: str | None) -> torch.Tensor:
    (saved,) = comfy.run_prompt(_prompt(seed, mode), executor=executor)["8"]["latents"]
    folder = comfy.folder_paths.get_output_directory()
    return load_file(f"{folder}/{saved['subfolder']}/{saved['filename']}")["latent_tensor"]


def _known_models(fp) -> weakref.WeakSet:
    """The models that have a fast-path state now, held weakly (an id could be reused by a later model)."""
    return weakref.WeakSet(fp._STATES.keys())


def _new_state(fp, known: weakref.WeakSet):
    (state,) = [(model, state) for model, state in fp._STATES.items() if model not in known]
    return state


def test_unload_frees_the_graphs_and_the_next_call_recaptures_identical(comfy, mm, pack):
    executor = comfy.new_executor()
    eager = {seed: _latent(comfy, executor, seed, None) for seed in (1, 2)}
    known = _known_models(pack.fp)
    assert torch.equal(_latent(comfy, executor, 1, "cuda_graph"), eager[1])
    base_model, state = _new_state(pack.fp, known)
    (entry,) = state.cache.entries.values()
    # The first capture asked for the documented estimate: what it holds (static buffers, the loop's outputs)
    # plus core's memory estimate of one UNet call of the latent; the sampled model is kept loaded.
    ((first, device, keep),) = pack.requests
    assert first == entry.nbytes + int(base_model.memory_required([1, 4, 8, 8])) and entry.nbytes > 0
    assert str(device) == "cpu" and any(patcher.model is base_model for patcher in keep)
    assert "asked ComfyUI for" in state.cache.events[-1].reason
    measured = entry.nbytes
    del entry

    mm.unload_all_models()  # the fast-path clone is the one loaded: its ON_DETACH callback releases
    assert not state.cache.entries and state.compiled == {} and state.weight_slots is None
    assert state.cache.events[-1].kind == "released" and state.cache.events[-1].reason.startswith(
        "ComfyUI unloaded the model: 1 captured loop(s)")

    assert torch.equal(_latent(comfy, executor, 2, "cuda_graph"), eager[2])
    assert len(pack.requests) == 2 and pack.requests[1][0] == measured  # the last capture's size of this key
    assert state.cache.events[-1].kind == "recapture" and "ComfyUI unloaded the model" in state.cache.events[-1].reason
    assert len(state.cache.entries) == 1 and state.calls["fast"] == 2


def test_unload_through_a_plain_clone_is_swept_at_the_next_fast_call(comfy, mm, pack):
    """A graph without the fast path on the same checkpoint takes the device (core detaches the fast clone, weights
    kept: nothing released), then ComfyUI unloads that clone: the next fast-path call -- of another model here --
    finds the model unloaded and frees its state."""
    executor = comfy.new_executor()
    known = _known_models(pack.fp)
    fast = _latent(comfy, executor, 4, "cuda_graph")
    _, state = _new_state(pack.fp, known)
    assert torch.equal(fast, _latent(comfy, executor, 4, None))
    assert len(state.cache.entries) == 1 and state.cache.events[-1].kind == "capture"  # the hand-over kept it
    mm.unload_all_models()  # the plain clone was loaded: no callback of the pack ran
    assert len(state.cache.entries) == 1
    comfy.run_prompt(_prompt(5, "cuda_graph"))  # another executor: another checkpoint object, another model
    assert not state.cache.entries and state.cache.events[-1].kind == "released"
    assert "through a clone without the fast path" in state.cache.events[-1].reason


@pytest.mark.slow
def test_unload_frees_the_compiled_module(comfy, mm, pack):
    """mode compile_cuda_graph (torch.compile traces the UNet; ``aot_eager``: no code generation on the CPU)."""
    pack.settings["compile_backend"] = "aot_eager"
    executor = comfy.new_executor()
    eager = _latent(comfy, executor, 3, None)
    known = _known_models(pack.fp)
    fast = _latent(comfy, executor, 3, "compile_cuda_graph")
    _, state = _new_state(pack.fp, known)
    assert state.compile_failed is None and len(state.compiled) == 1 and len(state.cache.entries) == 1
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    mm.unload_all_models()  # the fast-path clone is the one loaded
    assert state.compiled == {} and not state.cache.entries
    assert "1 captured loop(s)" in state.cache.events[-1].reason and "1 compiled module(s)" in state.cache.events[-1].reason


def test_free_device_memory_unloads_other_models_and_keeps_the_sampled_one(comfy, mm):
    """The contract's request reaches core's ``free_memory``: asked for more than the device has, core unloads
    every other loaded model and keeps the ones named."""
    contract = importlib.import_module("lcm_lora_pack.host.contract")
    kept, other = (comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0] for _ in range(2))
    mm.load_models_gpu([kept])
    mm.load_models_gpu([other])
    assert {id(kept), id(other)} <= {id(patcher) for patcher in mm.loaded_models()}
    assert contract.free_device_memory(10 ** 30, kept.load_device, [kept]) is None
    loaded = {id(patcher) for patcher in mm.loaded_models()}
    assert id(kept) in loaded and id(other) not in loaded


def test_contacts_that_do_not_match_give_a_report_line(comfy, mm, monkeypatch):
    contract = importlib.import_module("lcm_lora_pack.host.contract")
    assert "on_model_unload" in contract.on_model_unload(types.SimpleNamespace(), "key", print)
    monkeypatch.delattr(mm, "free_memory")
    assert "free_device_memory" in contract.free_device_memory(1, "cpu")
    assert contract.model_memory_required(types.SimpleNamespace(memory_required=lambda shape: 1), [1, 4, 8, 8]) is None


def test_capture_cache_is_bounded_by_bytes_and_keeps_the_newest():
    fast_path = importlib.import_module("lcm_lora_pack.samplers.fast_path")
    cache = fast_path.CaptureCache(capacity=4, max_bytes=100)

    def put(key, nbytes):
        cache.put("w", key, fast_path.CacheEntry(None, None, nbytes=nbytes), fast_path.CaptureEvent("capture", key, 0))

    for key in "abc":
        put(key, 40)
    assert [key for _, key in cache.entries] == ["b", "c"] and cache.nbytes == 80
    put("d", 500)  # larger than the bound alone: kept (the newest), the others dropped
    assert [key for _, key in cache.entries] == ["d"]
    assert cache.release("ComfyUI unloaded the model") == (1, 500) and not cache.entries
    assert cache.reason_for("w", "a") == ("recapture", "ComfyUI unloaded the model")
    assert cache.sizes == {"a": 40, "b": 40, "c": 40, "d": 500}  # what a re-capture of each key asks for


def test_dropping_the_vae_frees_its_fast_decoder_and_leaves_no_dead_model(comfy, mm):
    """ComfyUI drops a VAE (its graph left the cache: the live bench's TAESD after the TAESD graph): the fast
    decoder's captured graph goes with it, and core's model management finds no module alive whose patcher died
    (else it runs a full garbage collection before every later job: "memory leak with model TAESD")."""
    fast_vae = importlib.import_module("lcm_lora_pack.host.comfy_fast_vae")
    vae = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[2]
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    image = fast_vae.fast_vae_decode(vae, latent, mode="cuda_graph", backend="eager_replay")
    assert torch.equal(image, vae.decode(latent))
    state = fast_vae.decoder_state(vae)
    assert len(state.cache.entries) == 1
    module = weakref.ref(vae.first_stage_model)
    del vae
    gc.collect()
    assert module() is None
    assert not [loaded for loaded in mm.current_loaded_models if loaded.is_dead()]
    assert not state.cache.entries and state.cache.events[-1].kind == "released"
    assert state.cache.events[-1].reason.startswith("ComfyUI dropped the VAE: 1 captured loop(s)")


def test_dropping_the_checkpoint_frees_the_fast_path_and_leaves_no_dead_model(comfy, mm, pack):
    """The checkpoint's graph leaves ComfyUI's cache without an unload (a live client switched checkpoints): the
    captured loops go with its last patcher, and core finds no model alive whose patchers all died."""
    executor = comfy.new_executor()
    known = _known_models(pack.fp)
    _latent(comfy, executor, 6, "cuda_graph")
    base_model, state = _new_state(pack.fp, known)
    assert len(state.cache.entries) == 1
    model = weakref.ref(base_model)
    pack.requests.clear()  # the recorded calls keep the sampled patchers
    del base_model, executor
    gc.collect()
    assert model() is None
    assert not [loaded for loaded in mm.current_loaded_models if loaded.is_dead()]
    assert not state.cache.entries and state.cache.events[-1].kind == "released"
    assert state.cache.events[-1].reason.startswith("ComfyUI dropped the model: 1 captured loop(s)")
