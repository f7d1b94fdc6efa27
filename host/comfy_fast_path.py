"""The real-time fast path in ComfyUI: the whole few-step loop of a fixed shape as one CUDA graph, replayed.

Hook. :func:`with_fast_path` gives a clone a ``SAMPLER_SAMPLE`` wrapper (ComfyUI's public patcher-extension
wrappers, ``ModelPatcher.add_wrapper_with_key``) and the settings as a model option. The wrapper sees every
sampler call on that model -- the pack's ``KSamplerLCM`` / ``LCMSampler``, core's ``KSampler``, ``SamplerCustom``
and ``SamplerCustomAdvanced`` (``BasicGuider``, ``CFGGuider``) alike -- and either runs the call on the fast path
or hands it to ComfyUI unchanged (``executor(...)``) with one report line saying why (:func:`fallback_reason`).

What runs. ``fixed_loops.FIXED_LOOPS`` (the LCM loop for the pack's and core's ``lcm``, the pack's TCD, core's
``euler`` -- and core's ``ddim``, which is ``sample_euler`` --, ``euler_ancestral`` and ``dpmpp_2m``; any sigma
list; with a noise mask, core's ``KSamplerX0Inpaint`` blend around every model call) on static buffers, with the
step's x̂₀ computed as core's ``CFGGuider`` computes it (``comfy_fast_guidance``: one model call; at cfg ≠ 1 cond
and uncond batched as core batches them, then the CFG combination), i.e. what ComfyUI's ``KSAMPLER.sample`` +
sampler + guider compute, with the fresh noise of every re-noising step pre-drawn into a static buffer by the
eager sampler's own noise-sampler function and every host branch decided before the replay
(``comfy_fast_plans``; core's seeding rule differs by version).
Mode ``cuda_graph`` captures the eager kernels (same kernels as eager: same latent); ``compile_cuda_graph`` first
compiles the diffusion model with ``torch.compile`` (inductor, fixed shapes; swapped in during ``apply_model`` by
core's own ``apply_torch_compile_factory`` wrapper, as ``TorchCompileModel`` does) and captures the compiled
kernels (fp16 tolerance).

State. Kept per ``BaseModel`` (the object every clone of a loaded checkpoint shares, weakly): compiled modules
survive LoRA strength changes (parameters are graph inputs, not constants), graphs are re-captured only when
the key changes -- shapes, schedule, conditioning shapes, or the *addresses* of the weights and sampling tables
(a graph reads them by address; ComfyUI re-patching a LoRA replaces the weight tensors).

Never worse than core. The path does not capture where a capture cannot be trusted, and says why: under
ComfyUI's default CUDA allocator ``cudaMallocAsync`` (a failed capture there ends the process;
``capture_allocator_reason``) and under Dynamic VRAM (ComfyUI 0.16+ default on GPUs: the LoRA-patched weights are
rebuilt at every use, so a graph's weight addresses never hold and every call would re-capture;
:func:`dynamic_vram`). A failed compile or capture releases everything it allocated (``CaptureFailed``) before
the path captures the eager UNet or hands the call to ComfyUI.
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field, replace

import comfy.patcher_extension as extensions
import comfy.samplers
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
    describe,
    pointer_token,
    report_once,
    signature,
    tensor_bytes,
    tensor_slots,
    timed_capture,
)
from ..samplers.fixed_loops import FIXED_LOOPS, masked_denoiser
from . import contract
from .comfy_fast_guidance import WRAPPER_KEY, guidance_inputs, guidance_reason, guided_denoiser
from .comfy_fast_memory import (
    ask_for_room,
    capture_estimate,
    release_unloaded,
    release_when_dropped,
    track,
    watch_unload,
)
from .comfy_fast_plans import REPLAYED_SAMPLERS, loop_inputs, sampler_options_reason
from .contract import dynamic_vram

LOG = logging.getLogger(__name__)

OPTION_KEY = "lcm_pack_fast_path"
MODES = ("compile_cuda_graph", "cuda_graph", "off")


# model_options entries that change what a step computes beyond one apply_model call.
FOREIGN_OPTIONS = ("sampler_cfg_function", "sampler_post_cfg_function", "sampler_pre_cfg_function",
                   "model_function_wrapper", "denoise_mask_function", "context_handler", "disable_cfg1_optimization")
FOREIGN_WRAPPERS = (extensions.WrappersMP.PREDICT_NOISE, extensions.WrappersMP.CALC_COND_BATCH,
                    extensions.WrappersMP.APPLY_MODEL, extensions.WrappersMP.DIFFUSION_MODEL)


@dataclass(frozen=True)
class FastPathSettings:
    """How the fast path runs. ``backend`` "eager_replay" is the CPU stand-in for a CUDA graph (tests)."""

    mode: str = "compile_cuda_graph"
    compile_mode: str | None = None  # torch.compile mode: None (default) or "max-autotune-no-cudagraphs"
    compile_backend: str = "inductor"  # torch.compile backend ("aot_eager" in CPU tests: tracing without codegen)
    backend: str = "cuda_graph"
    capacity: int = 4  # captured graphs kept per model (one per shape / schedule)
    max_capture_bytes: int | None = None  # and at most this many bytes held by them (None: count only)
    warmup: int = 2

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"fast path mode={self.mode!r} is not one of {MODES}.")
        if self.backend not in ("cuda_graph", "eager_replay"):
            raise ValueError(f"fast path backend={self.backend!r} is not 'cuda_graph' or 'eager_replay'.")


@dataclass
class ModelState:
    """What the fast path keeps for one BaseModel: captured loops, compiled modules, reported fallbacks."""

    cache: CaptureCache
    compiled: dict = field(default_factory=dict)
    compile_failed: str | None = None
    reported: set = field(default_factory=set)
    calls: dict = field(default_factory=lambda: {"fast": 0, "eager": 0})
    weight_slots: tuple | None = None  # (diffusion model, its tensor slots)
    watched: weakref.WeakSet = field(default_factory=weakref.WeakSet)  # root patchers whose drop releases it


_STATES: weakref.WeakKeyDictionary = track(weakref.WeakKeyDictionary())  # BaseModel -> ModelState
_UNKEYED_STATE = ModelState(CaptureCache(capacity=1))  # fallbacks of a guider without its model (host/contract)


def model_state(base_model, capacity: int = 4, max_bytes: int | None = None) -> ModelState:
    state = _STATES.get(base_model)
    if state is None:
        state = _STATES[base_model] = ModelState(CaptureCache(capacity=capacity, max_bytes=max_bytes))
    return state


def with_fast_path(model_patcher, settings: FastPathSettings | None = None):
    """A clone of ``model_patcher`` that samples LCM on the fast path (the input model is not changed)."""
    settings = settings or FastPathSettings()
    clone = model_patcher.clone()
    clone.model_options[OPTION_KEY] = settings
    clone.remove_wrappers_with_key(extensions.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY)
    clone.add_wrapper_with_key(extensions.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY, fast_sampler_sample)
    watch_unload(clone, _STATES)  # ComfyUI unloading the model frees its graphs and compiled modules
    return clone


def fast_path_report(model_patcher) -> list[str]:
    """The capture events of the model's fast path (newest last), as report lines."""
    state = _STATES.get(model_patcher.model)
    return [] if state is None else [event.line() for event in state.cache.events]


def fast_path_state(model_patcher) -> ModelState | None:
    return _STATES.get(model_patcher.model)


def lcm_sampler_kind(function) -> str | None:
    """"pack lcm" / "core lcm" for the LCM sampler functions the fast path replays, else None."""
    return contract.lcm_sampler_kind(function)


DYNAMIC_VRAM_REASON = ("ComfyUI runs this model with Dynamic VRAM (it rebuilds the LoRA-patched weights at every "
                       "use, so a captured graph's weight addresses never hold and every call would re-capture): "
                       "start ComfyUI with --disable-dynamic-vram to use the captured path")


def _foreign_wrappers(model_options: dict) -> list[str]:
    return contract.wrapper_names(model_options, FOREIGN_WRAPPERS)


def _patch_entries(model_options: dict) -> list[str]:
    options = model_options.get("transformer_options", {})
    return [name for name in ("patches", "patches_replace") if any(options.get(name, {}).values())]


def fallback_reason(sampler, guider, extra_args: dict, noise: torch.Tensor, denoise_mask,
                    settings: FastPathSettings) -> str | None:
    """Why this sampler call cannot run on the fast path (None: it can). Checked cheapest first."""
    if settings.mode == "off":
        return "switched off (mode off)"
    function = getattr(sampler, "sampler_function", None)
    found = contract.fixed_sampler_kind(function)
    if found is None:
        return (f"sampler {getattr(function, '__name__', type(sampler).__name__)} is not one the fast path replays "
                f"({REPLAYED_SAMPLERS})")
    mismatch = contract.guider_mismatch(guider)
    if mismatch is not None:
        return mismatch
    options = sampler_options_reason(sampler, found[0])
    if options is not None:
        return options
    if denoise_mask is not None and (denoise_mask.shape != noise.shape or denoise_mask.is_nested):
        return f"a noise mask of shape {tuple(denoise_mask.shape)} for a latent of {tuple(noise.shape)}"
    if type(guider).predict_noise is not comfy.samplers.CFGGuider.predict_noise:
        return f"guider {type(guider).__name__} is not the plain CFG guider"
    model_options = extra_args.get("model_options", {})
    foreign = [name for name in FOREIGN_OPTIONS if model_options.get(name)]
    if model_options.get("sampler_calc_cond_batch_function") is not None:
        foreign.append("sampler_calc_cond_batch_function")
    foreign += _foreign_wrappers(model_options) + _patch_entries(model_options)
    if extensions.get_all_callbacks(extensions.CallbacksMP.ON_PREPARE_STATE, guider.model_patcher.model_options,
                                    is_model_options=True):
        foreign.append("on_prepare_state callbacks")
    if foreign:
        return f"model patches the fast path does not replay: {', '.join(foreign)}"
    if noise.ndim != 4 or noise.is_nested:
        return f"latent of shape {tuple(noise.shape)} (fast path: 4-D image latents)"
    if settings.backend == "cuda_graph" and (allocator := capture_allocator_reason()):
        return allocator
    if settings.backend == "cuda_graph" and noise.device.type != "cuda":
        return f"device {noise.device} is not CUDA (CUDA graphs need a CUDA device)"
    if dynamic_vram(guider.model_patcher):
        return DYNAMIC_VRAM_REASON
    if getattr(guider.inner_model, "model_lowvram", False):
        return "the model is only partly on the GPU (low VRAM mode)"
    return guidance_reason(guider, model_options)


def fast_sampler_sample(executor, guider, sigmas, extra_args, callback, noise, latent_image=None,
                        denoise_mask=None, disable_pbar=False):
    """``SAMPLER_SAMPLE`` wrapper: the fast path where :func:`fallback_reason` allows it, else ComfyUI's call."""
    model_options = extra_args.get("model_options", {})
    settings = model_options.get(OPTION_KEY) or FastPathSettings()
    base_model = getattr(guider, "inner_model", None)
    state = (model_state(base_model, settings.capacity, settings.max_capture_bytes) if base_model is not None
             else _UNKEYED_STATE)
    release_unloaded()  # what ComfyUI unloaded through clones without the fast path
    if base_model is not None:
        release_when_dropped(guider.model_patcher, state)
    sampler = contract.wrapped_sampler(executor)
    reason = (fallback_reason(sampler, guider, extra_args, noise, denoise_mask, settings) if sampler is not None
              else contract.line("wrapped_sampler", "the wrapper executor has no class_obj", "running core's sampler"))
    if reason is None:
        try:
            samples = run_fast_path(state, settings, sampler, guider, sigmas, extra_args, callback, noise,
                                    latent_image, denoise_mask)
            state.calls["fast"] += 1
            return samples
        except (FastPathUnavailable, contract.ContactMismatch) as error:
            reason = str(error)
    report_once(state.reported, f"LCM fast path: running eager ComfyUI sampling: {reason}")
    state.calls["eager"] += 1
    return executor(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)


def weights_token(state: ModelState, base_model) -> tuple:
    """Identity of what the graph reads by address: model objects and every weight's data pointer."""
    if state.weight_slots is None or state.weight_slots[0] is not base_model.diffusion_model:
        state.weight_slots = (base_model.diffusion_model,
                              tensor_slots(base_model.diffusion_model, base_model.model_sampling))
    return id(base_model.diffusion_model), id(base_model.model_sampling), pointer_token(state.weight_slots[1])


def _compile_wrapper(state: ModelState, base_model, settings: FastPathSettings):
    """Core's ``torch.compile`` swap wrapper around a compiled diffusion model kept in the state (or None)."""
    if settings.mode != "compile_cuda_graph" or state.compile_failed:
        return None
    key = (id(base_model.diffusion_model), settings.compile_mode, settings.compile_backend)
    if key not in state.compiled:
        state.compiled[key] = torch.compile(base_model.diffusion_model, backend=settings.compile_backend,
                                            dynamic=False, mode=settings.compile_mode)
    try:
        return contract.torch_compile_wrapper({"diffusion_model": state.compiled[key]})
    except contract.ContactMismatch as error:
        state.compile_failed = str(error)
        return None


@dataclass(frozen=True)
class CallInputs:
    """One call's values for the static buffers, and the host-side parts of its key."""

    values: dict
    plan: object
    constants: dict
    guidance: object  # comfy_fast_guidance.Guidance
    kind: str  # "pack lcm", "pack tcd", "core lcm", "core euler", "core euler_ancestral", "core dpmpp_2m"
    family: str  # the loop (fixed_loops.FIXED_LOOPS)


def _call_inputs(sampler, guider, sigmas, extra_args, noise, latent_image, denoise_mask) -> CallInputs:
    kind, family = contract.fixed_sampler_kind(sampler.sampler_function)
    sigma_list = sigmas.tolist()  # one device read: the plan's branches
    guidance, tensors, constants = guidance_inputs(guider, extra_args.get("model_options", {}), noise, sigma_list)
    plan, step_values = loop_inputs(kind, family, sampler, guider, sigmas, sigma_list, noise, extra_args,
                                    denoise_mask)
    latent = latent_image if latent_image is not None else torch.zeros_like(noise)
    values = {"noise": noise, "latent_image": latent, "sigmas": sigmas, **step_values,
              **{(name if name.startswith("control.") else f"cond.{name}"): value for name, value in tensors.items()}}
    return CallInputs(values, plan, constants, guidance, kind, family)


def run_fast_path(state: ModelState, settings: FastPathSettings, sampler, guider, sigmas, extra_args, callback,
                  noise, latent_image, denoise_mask=None):
    """Replay (capturing first when the key is new) and return the sampled latent, as ``KSAMPLER.sample`` does."""
    call = _call_inputs(sampler, guider, sigmas, extra_args, noise, latent_image, denoise_mask)
    base_model = guider.inner_model
    token = weights_token(state, base_model)
    shape_key = (call.plan, signature(call.values), tuple(sorted(call.constants.items())), call.kind,
                 call.guidance.key, settings.mode, settings.compile_mode, settings.compile_backend, settings.backend)
    entry = state.cache.get(token, shape_key)
    if entry is None:
        entry = _capture(state, settings, guider, extra_args, call, token, shape_key)
    entry.buffers.load(call.values)
    outputs = entry.captured.replay()
    if callback is not None:
        for i in range(call.plan.steps):
            callback(i, outputs[f"denoised_{i}"], outputs[f"x_{i}"], call.plan.steps)
    return outputs["samples"].clone()


def _capture(state, settings, guider, extra_args, call: CallInputs, token, shape_key) -> CacheEntry:
    kind, reason = state.cache.reason_for(token, shape_key)
    failed = state.cache.failed.get((token, shape_key))
    if failed:
        raise FastPathUnavailable(f"capture failed before for this shape: {failed}")
    base_model = guider.inner_model
    room = ask_for_room(state.cache, shape_key, guider, lambda: capture_estimate(  # before the capture allocates
        base_model, call.values, call.plan.steps, len(call.guidance.order)), call.values["noise"].device,
        state.reported)
    buffers = StaticBuffers(call.values, call.values["noise"].device)
    buffers.load(call.values)
    model_options = extra_args["model_options"]
    names = [name for name in call.values if name.startswith("cond.")]
    model_sampling = base_model.model_sampling
    try:
        captured, seconds, compiled = _capture_with_compile_fallback(state, settings, base_model, model_options,
                                                                     call, buffers, names)
    except CaptureFailed as error:  # everything the attempt allocated is released already
        message = str(error)
        state.cache.failed[(token, shape_key)] = message
        state.cache.record(CaptureEvent("failed", message, 0.0, shape_key))
        raise FastPathUnavailable(f"capture failed: {message}") from None
    entry = CacheEntry(captured, buffers, keep_alive=(model_sampling, model_options),
                       nbytes=tensor_bytes(buffers.tensors) + captured.held_bytes)
    guided = f", cfg {call.guidance.cfg:g} (cond + uncond batched)" if len(call.guidance.order) > 1 else ""
    if call.guidance.control is not None:
        guided += f", ControlNet at {sum(call.guidance.active)} of {call.plan.steps} steps"
    if call.plan.masked:
        guided += ", noise mask (inpainting)"
    detail = (f"{reason}; {'compiled' if compiled else 'eager'} UNet, {settings.backend}, batch "
              f"{call.values['noise'].shape[0]}, {call.plan.steps} steps, {call.kind}{guided}; {room}, holds "
              f"{entry.nbytes / 2 ** 20:.1f} MiB")
    state.cache.put(token, shape_key, entry, CaptureEvent(kind, detail, seconds, shape_key))
    return entry


def _new_backend(settings: FastPathSettings):
    return CudaGraphBackend() if settings.backend == "cuda_graph" else EagerReplayBackend()


def _capture_with_compile_fallback(state, settings, base_model, model_options, call, buffers, names):
    """(captured, seconds, compiled?): the loop captured with the compiled UNet; if compiling or that capture
    fails, the attempt is released, the compiled module dropped, the failure reported, and the eager UNet
    captured on a fresh backend. A failure of the eager capture raises :class:`CaptureFailed` (released too)."""
    def loop(compile_wrapper):
        denoise = guided_denoiser(base_model, model_options, call.guidance, buffers, names, call.constants,
                                  compile_wrapper, call.plan.steps)
        if call.plan.masked:
            denoise = masked_denoiser(denoise, contract.inpaint_scaling(base_model), buffers)
        sampling, fixed_loop = base_model.model_sampling, FIXED_LOOPS[call.family]
        return lambda: fixed_loop(denoise, sampling.noise_scaling, sampling.inverse_noise_scaling, buffers,
                                  call.plan)

    if settings.mode == "compile_cuda_graph" and not state.compile_failed:
        try:
            wrapper = _compile_wrapper(state, base_model, settings)
        except Exception as error:  # noqa: BLE001  (torch.compile and core's helper raise many types)
            state.compile_failed = describe(error)
        else:
            try:  # no wrapper: core's compile helper did not match (compile_failed says how)
                if wrapper is not None:
                    captured, seconds = timed_capture(_new_backend(settings), loop(wrapper), settings.warmup)
                    return captured, seconds, True
            except CaptureFailed as error:
                state.compile_failed = str(error)
        wrapper = None
        state.compiled.clear()  # the compiled module and what it holds go with the failed attempt
        LOG.warning("LCM fast path: torch.compile failed (%s), released; capturing the eager UNet instead",
                    state.compile_failed)
    captured, seconds = timed_capture(_new_backend(settings), loop(None), settings.warmup)
    return captured, seconds, False


def settings_from(model_patcher) -> FastPathSettings | None:
    """The fast-path settings a model carries (None: none)."""
    return model_patcher.model_options.get(OPTION_KEY)


def with_mode(settings: FastPathSettings, **changes) -> FastPathSettings:
    return replace(settings, **changes)
