"""Issue 29 items 0 and 3 on the CPU, inside real ComfyUI: the real-time path never costs the user what core does.

* A capture that fails (as ``torch.compile``'s kernels did inside a CUDA-graph capture on an H100, "CUDA driver
  error: invalid argument") releases everything it allocated, keeps nothing in the cache, is not retried on
  every call, and the call gives eager ComfyUI's latent with one report line.
* A failed compile drops the compiled module and captures the eager UNet.
* Under ComfyUI's default CUDA allocator (``cudaMallocAsync``; a failed capture there ends the process) and under
  Dynamic VRAM (``ModelPatcher.is_dynamic()``: weights rebuilt at every use), nothing is captured: eager ComfyUI
  runs, with the reason.

The CUDA graph is replaced by ``EagerReplayBackend`` (same contract, Python re-run), as in
test_realtime_fast_path.py; the GPU proof through a real ``main.py`` is bench/device/bench_server_realtime.py.
"""
from __future__ import annotations

import importlib
import logging
import weakref

import pytest
import torch
from conftest import SD15_CKPT

fp = None  # lcm_lora_pack.host.comfy_fast_path, imported once ComfyUI has booted
fast_path = None  # lcm_lora_pack.samplers.fast_path


@pytest.fixture(scope="module", autouse=True)
def modules(comfy):
    global fp, fast_path
    fp = importlib.import_module("lcm_lora_pack.host.comfy_fast_path")
    fast_path = importlib.import_module("lcm_lora_pack.samplers.fast_path")


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)


@pytest.fixture
def lcm_model(comfy, sd15):
    """A fresh LCM model (own BaseModel: the fast path's state starts empty)."""
    (model,) = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:1]
    return comfy.run_node("LCMPack_ModelSamplingLCM", model=model, original_inference_steps=50,
                          timestep_scaling=10.0, sigma_data=0.5)[0]


def _cond(seed: int):
    return [[0.5 * torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def ksampler_lcm(comfy, model, seed=1):
    return comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=_cond(seed), negative=_cond(99),
                          latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=seed, steps=4, cfg=1.0,
                          sampler="lcm", gamma=0.3, denoise=1.0)[0]["samples"]


def _fast(model, **settings):
    return fp.with_fast_path(model, fp.FastPathSettings(**{"mode": "cuda_graph", "backend": "eager_replay",
                                                           **settings}))


class FailingCapture:
    """An ``EagerReplayBackend`` whose capture fails part-way: the loop has run (its tensors exist, watched
    by weak references) when the error comes, as a CUDA error inside ``torch.cuda.graph`` would."""

    instances: list = []

    def __init__(self):
        self.inner = fast_path.EagerReplayBackend()
        self.watched: list[weakref.ref] = []
        FailingCapture.instances.append(self)

    name = "eager_replay"

    def capture(self, fn, warmup=2):
        def record():
            outputs = fn()
            self.watched += [weakref.ref(tensor) for tensor in outputs.values()]
            raise RuntimeError("CUDA driver error: invalid argument")

        return fast_path.guarded_capture(record, self.inner.release)


def test_failed_capture_releases_everything_and_runs_eager(comfy, lcm_model, monkeypatch, caplog):
    monkeypatch.setattr(fp, "EagerReplayBackend", FailingCapture)
    FailingCapture.instances.clear()
    fast = _fast(lcm_model)
    with caplog.at_level(logging.WARNING):
        got = ksampler_lcm(comfy, fast, seed=3)
    assert torch.equal(got, ksampler_lcm(comfy, lcm_model, seed=3))
    state = fp.fast_path_state(fast)
    (backend,) = FailingCapture.instances
    assert backend.watched and all(ref() is None for ref in backend.watched), "the failed capture's tensors live on"
    assert backend.inner.releases == 1
    assert not state.cache.entries  # nothing captured is kept
    assert list(state.cache.failed.values()) == ["RuntimeError: CUDA driver error: invalid argument"]
    assert state.calls == {"fast": 0, "eager": 1}
    assert ("LCM fast path: running eager ComfyUI sampling: capture failed: RuntimeError: CUDA driver error: "
            "invalid argument") in caplog.text
    again = ksampler_lcm(comfy, fast, seed=4)  # the same shape is not captured again
    assert torch.equal(again, ksampler_lcm(comfy, lcm_model, seed=4))
    assert len(FailingCapture.instances) == 1 and state.calls["eager"] == 2


def test_guarded_capture_raises_without_the_original_error_attached():
    """The error's traceback holds the failed attempt's frames (and tensors): it must not travel on."""
    watched = []

    def record():
        tensor = torch.ones(4)
        watched.append(weakref.ref(tensor))
        raise ValueError("capture went wrong\nsecond line")

    released = []
    with pytest.raises(fast_path.CaptureFailed) as caught:
        fast_path.guarded_capture(record, lambda: released.append(watched[0]() is None))
    assert str(caught.value) == "ValueError: capture went wrong"
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert released == [True]  # the release ran after the attempt's tensors were gone


def test_failed_compile_drops_the_compiled_model_and_captures_the_eager_unet(comfy, lcm_model, caplog):
    """torch.compile raising at wrap time (here: an unknown backend) counts as a failed compile."""
    fast = _fast(lcm_model, mode="compile_cuda_graph", compile_backend="lcm_pack_no_such_backend")
    with caplog.at_level(logging.WARNING):
        got = ksampler_lcm(comfy, fast, seed=5)
    assert torch.equal(got, ksampler_lcm(comfy, lcm_model, seed=5))
    state = fp.fast_path_state(fast)
    assert state.compile_failed and "lcm_pack_no_such_backend" in state.compile_failed
    assert state.compiled == {}
    assert "eager UNet" in state.cache.events[-1].reason and state.calls["fast"] == 1
    assert "LCM fast path: torch.compile failed" in caplog.text


def test_failed_compiled_capture_is_released_before_the_eager_capture(comfy, lcm_model, monkeypatch):
    """The compiled attempt fails inside the capture: released, compiled module dropped, eager UNet captured."""
    attempts = []

    class FailsFirst(fast_path.EagerReplayBackend):
        def capture(self, fn, warmup=2):
            attempts.append(self)
            if len(attempts) == 1:  # fails before tracing (tracing the UNet on 2 CPU cores takes minutes)
                return fast_path.guarded_capture(lambda: 1 / 0, self.release)
            return super().capture(fn, warmup)

    monkeypatch.setattr(fp, "EagerReplayBackend", FailsFirst)
    fast = _fast(lcm_model, mode="compile_cuda_graph", compile_backend="eager")
    assert torch.equal(ksampler_lcm(comfy, fast, seed=6), ksampler_lcm(comfy, lcm_model, seed=6))
    state = fp.fast_path_state(fast)
    assert [backend.releases for backend in attempts] == [1, 0]
    assert state.compile_failed == "ZeroDivisionError: division by zero" and state.compiled == {}
    assert "eager UNet" in state.cache.events[-1].reason and len(state.cache.entries) == 1


def test_cuda_malloc_async_allocator_falls_back_with_its_reason(comfy, sd15, lcm_model, monkeypatch, caplog):
    """ComfyUI's default allocator (main.py sets backend:cudaMallocAsync): no capture, sampler or decoder."""
    monkeypatch.setattr(torch.cuda, "get_allocator_backend", lambda: "cudaMallocAsync")
    fast = fp.with_fast_path(lcm_model, fp.FastPathSettings(mode="compile_cuda_graph"))
    with caplog.at_level(logging.WARNING):
        got = ksampler_lcm(comfy, fast, seed=7)
    assert torch.equal(got, ksampler_lcm(comfy, lcm_model, seed=7))
    assert fp.fast_path_state(fast).cache.events == []
    assert "allocator is cudaMallocAsync" in caplog.text and "--disable-cuda-malloc" in caplog.text
    fast_vae = importlib.import_module("lcm_lora_pack.host.comfy_fast_vae")
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (image,) = comfy.run_node("LCMPack_FastVAEDecode", samples={"samples": latent}, vae=sd15[2],
                                  mode="compile_cuda_graph")
    assert torch.equal(image, comfy.run_node("VAEDecode", vae=sd15[2], samples={"samples": latent})[0])
    assert "LCM fast decode: running ComfyUI's VAE.decode" in caplog.text and "cudaMallocAsync" in caplog.text
    assert fast_vae.fast_decode_report(sd15[2]) == []


def test_dynamic_vram_is_read_from_core_is_dynamic(lcm_model):
    """0.33's ``ModelPatcherDynamic.is_dynamic()`` answers True, plain ``ModelPatcher`` False; hosts without the
    method (0.8.0, 0.3.75) never load dynamically. (The clone is only asked, never sampled: core itself would
    take a reporting plain patcher for a dynamic one and look for its VRAM pins.)"""
    reporting = lcm_model.clone()
    reporting.__class__ = type("ReportsDynamic", (type(lcm_model),), {"is_dynamic": lambda self: True})
    assert fp.dynamic_vram(reporting) is True
    assert fp.dynamic_vram(lcm_model) is False
    assert fp.dynamic_vram(object()) is False


def test_dynamic_vram_falls_back_once_detected_and_never_captures(comfy, sd15, lcm_model, monkeypatch, caplog):
    """Every patcher reports Dynamic VRAM to the pack (ComfyUI 0.33's default on a GPU): nothing is captured,
    sampler or decoder, and eager ComfyUI gives its own result, with one report line."""
    fast_vae = importlib.import_module("lcm_lora_pack.host.comfy_fast_vae")
    for module in (fp, fast_vae):
        monkeypatch.setattr(module, "dynamic_vram", lambda patcher: True)
    fast = _fast(lcm_model)
    with caplog.at_level(logging.WARNING):
        for seed in (9, 10):
            assert torch.equal(ksampler_lcm(comfy, fast, seed=seed), ksampler_lcm(comfy, lcm_model, seed=seed))
    state = fp.fast_path_state(fast)
    assert state.cache.events == [] and state.calls == {"fast": 0, "eager": 2}
    assert caplog.text.count("Dynamic VRAM") == 1 and "--disable-dynamic-vram" in caplog.text
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        image = fast_vae.fast_vae_decode(sd15[2], latent, mode="cuda_graph", backend="eager_replay")
    assert torch.equal(image, sd15[2].decode(latent))
    assert "Dynamic VRAM" in caplog.text and fast_vae.fast_decode_report(sd15[2]) == []
