"""VAE decode of a fixed shape as one CUDA graph (optionally of the ``torch.compile``d decoder).

Same result as ComfyUI's ``VAE.decode`` (``VAEDecode``) for a VAE that is fully on the GPU: the latent cast to
the VAE's dtype, ``first_stage_model.decode``, ``process_output`` (clamp((x + 1)/2) for image VAEs) in float32,
channels moved last, on the VAE's output device. The graph covers the decode and ``process_output``; the copy to
the output device and the batch split core makes when memory is short are outside it (a batch that core would
split, tiled decoding, partial loading or a non-CUDA device fall back to ``VAE.decode`` with a report line).
State per decoder module (weakly), re-captured when the shape or the weights' addresses change, and released
when ComfyUI drops the VAE (its patcher is collected): nothing the state holds refers to the VAE, and the compiled
decoder and captured graphs that refer to the module go with the VAE -- else ComfyUI's model management finds the
module alive after its patcher died ("memory leak with model TAESD") and runs a full garbage collection before
every later job (seen in the live bench, ~1.5 s a job). As the
sampler's fast path, it does not capture under ComfyUI's default ``cudaMallocAsync`` allocator or under Dynamic
VRAM (each says why), and a failed compile or capture is released before the eager decoder is captured.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

import comfy.model_management as model_management
import torch

from ..samplers.fast_path import (
    CacheEntry,
    CaptureCache,
    CaptureEvent,
    CaptureFailed,
    CudaGraphBackend,
    EagerReplayBackend,
    FastPathUnavailable,
    StaticBuffers,
    capture_allocator_reason,
    pointer_token,
    report_once,
    signature,
    tensor_slots,
    timed_capture,
)
from . import contract
from .comfy_fast_memory import release_on_collect, release_unloaded, track
from .contract import dynamic_vram

LOG = logging.getLogger(__name__)
_UNMATCHED: set = set()  # contact lines reported once per process
VAE_DROPPED = "ComfyUI dropped the VAE"


@dataclass
class DecoderState:
    cache: CaptureCache = field(default_factory=lambda: CaptureCache(capacity=2))
    compiled: object = None
    compile_failed: str | None = None
    reported: set = field(default_factory=set)
    slots: list | None = None


_STATES: weakref.WeakKeyDictionary = track(weakref.WeakKeyDictionary())  # first_stage_model -> DecoderState


def decoder_state(vae) -> DecoderState:
    """The decoder's state; released when the VAE's patcher is collected."""
    state = _STATES.get(vae.first_stage_model)
    if state is None:
        state = _STATES[vae.first_stage_model] = DecoderState()
        release_on_collect(vae.patcher, state, VAE_DROPPED)
    return state


def _reason(vae, samples: torch.Tensor, backend: str, mode: str) -> str | None:
    if mode == "off":
        return "switched off (mode off)"
    if samples.ndim != 4 or samples.is_nested:
        return f"latent of shape {tuple(samples.shape)} (fast decode: 4-D image latents)"
    if backend == "cuda_graph" and (allocator := capture_allocator_reason()):
        return allocator
    if backend == "cuda_graph" and torch.device(vae.device).type != "cuda":
        return f"VAE device {vae.device} is not CUDA"
    if dynamic_vram(vae.patcher):
        return ("ComfyUI runs the VAE with Dynamic VRAM (its weights are staged at every use, so a captured "
                "graph's addresses never hold): start ComfyUI with --disable-dynamic-vram to use the captured decode")
    if getattr(vae.patcher.model, "model_lowvram", False):
        return "the VAE is only partly on the GPU (low VRAM mode)"
    memory = vae.memory_used_decode(samples.shape, vae.vae_dtype)
    if model_management.get_free_memory(vae.device) < memory:
        return "not enough free memory to decode the batch at once (core would split or tile it)"
    return None


def _weights_token(state: DecoderState, vae) -> tuple:
    if state.slots is None:
        state.slots = tensor_slots(vae.first_stage_model)
    return id(vae.first_stage_model), pointer_token(state.slots)


def _decode_fn(state: DecoderState, vae, mode: str):
    if mode == "compile_cuda_graph" and state.compile_failed is None:
        if state.compiled is None:
            state.compiled = torch.compile(vae.first_stage_model.decode, dynamic=False)
        return state.compiled
    return vae.first_stage_model.decode


def _capture(state: DecoderState, vae, latent: torch.Tensor, mode: str, backend_name: str, token, key):
    kind, reason = state.cache.reason_for(token, key)
    if state.cache.failed.get((token, key)):
        raise FastPathUnavailable(f"capture failed before for this shape: {state.cache.failed[(token, key)]}")
    buffers = StaticBuffers({"samples": latent}, latent.device)
    buffers.load({"samples": latent})

    process_output = vae.process_output  # the VAE's own function, not the VAE (the state must not keep it alive)

    def run(decode):
        return lambda: {"image": process_output(decode(buffers["samples"]).float())}

    def new_backend():
        return CudaGraphBackend() if backend_name == "cuda_graph" else EagerReplayBackend()

    compiled = mode == "compile_cuda_graph" and state.compile_failed is None
    if compiled:
        try:
            captured, seconds = timed_capture(new_backend(), run(_decode_fn(state, vae, mode)), 2)
        except CaptureFailed as error:  # released already; drop the compiled decoder too
            state.compile_failed, state.compiled, compiled = str(error), None, False
            LOG.warning("LCM fast decode: torch.compile failed (%s), released; capturing the eager decoder",
                        state.compile_failed)
    if not compiled:
        try:
            captured, seconds = timed_capture(new_backend(), run(vae.first_stage_model.decode), 2)
        except CaptureFailed as error:
            message = state.cache.failed[(token, key)] = str(error)
            state.cache.record(CaptureEvent("failed", f"VAE decode: {message}", 0.0, key))
            raise FastPathUnavailable(f"capture failed: {message}") from None
    entry = CacheEntry(captured, buffers)
    state.cache.put(token, key, entry, CaptureEvent(kind, f"VAE decode: {reason}; {'compiled' if compiled else 'eager'}"
                                                          f" decoder, {backend_name}, latent {tuple(latent.shape)}",
                                                    seconds, key))
    return entry


def fast_vae_decode(vae, samples: torch.Tensor, mode: str = "compile_cuda_graph",
                    backend: str = "cuda_graph") -> torch.Tensor:
    """IMAGE (B, H, W, C) on the VAE's output device, as ``vae.decode(samples)``; the fast path where it can."""
    mismatch = contract.vae_decode_mismatch(vae)  # the VAE internals replayed here (host/contract/)
    if mismatch is not None:
        report_once(_UNMATCHED, mismatch)
        return vae.decode(samples)
    state = decoder_state(vae)
    memory = vae.memory_used_decode(samples.shape, vae.vae_dtype)
    model_management.load_models_gpu([vae.patcher], memory_required=memory, force_full_load=vae.disable_offload)
    release_unloaded()  # decoders (and models) ComfyUI unloaded since the last fast call
    reason = _reason(vae, samples, backend, mode)
    if reason is None:
        try:
            return _replay(state, vae, samples, mode, backend)
        except FastPathUnavailable as error:
            reason = str(error)
    report_once(state.reported, f"LCM fast decode: running ComfyUI's VAE.decode: {reason}")
    return vae.decode(samples)


def _replay(state: DecoderState, vae, samples: torch.Tensor, mode: str, backend: str) -> torch.Tensor:
    latent = samples.to(vae.vae_dtype).to(vae.device)
    token = _weights_token(state, vae)
    key = (signature({"samples": latent}), mode, backend)
    entry = state.cache.get(token, key) or _capture(state, vae, latent, mode, backend, token, key)
    entry.buffers.load({"samples": latent})
    image = entry.captured.replay()["image"]
    return image.to(vae.output_device, copy=True).movedim(1, -1)


def fast_decode_report(vae) -> list[str]:
    state = _STATES.get(vae.first_stage_model)
    return [] if state is None else [event.line() for event in state.cache.events]
