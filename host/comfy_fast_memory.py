"""The fast path's memory, seen by ComfyUI's model management (issue 23).

Why. A captured CUDA graph keeps a private memory pool (every tensor its loop allocates: activations, the
per-step outputs) for as long as the graph lives, and the static buffers beside it; a ``torch.compile``d copy of
the UNet keeps its compiled code. ComfyUI's model management counts the weights of the models it loaded, not
these: it took the pools' memory for free (``get_free_memory`` counts the reserved-but-inactive blocks of a
private pool as free torch memory), so at batch 4 on an 80 GB H100 a following ``VAEDecode`` or model load
found the device full. Two contacts close the gap, both through :mod:`host.contract`:

* **released when ComfyUI unloads the model**: the fast-path clone registers an ``ON_DETACH`` callback
  (:func:`contract.on_model_unload`); when core unloads the model from the device (``free_memory`` making room for
  another model or a decode, ``unload_all_models``, the server's ``/free``) every captured loop (graph, private
  pool, static buffers) and every compiled module of that model is dropped (:func:`release`), and the next call
  captures again. A clone of the same model taking the device (its weights stay) releases nothing; when that
  clone is unloaded later, :func:`release_unloaded` frees the state at the next fast-path call, and a call whose
  weights moved drops the stale graphs before it captures (``CaptureCache.get``).
* **released when ComfyUI drops the model** (its graph left the cache; no unload happens):
  :func:`release_when_dropped` (the fast path's model, through its root patcher) and the fast decode's finalizer
  on the VAE's patcher drop what would keep the model object alive after its patchers died.
* **asked for before a capture**: ComfyUI is asked to free the bytes the capture will hold
  (:func:`contract.free_device_memory`: core's ``free_memory``, as a model load asks, plus core's inference
  reserve), so the capture unloads other models rather than starving the next decode or load. The size: what
  the last capture of the same key held (:attr:`CaptureCache.sizes`, measured: the static buffers plus the
  allocator's reserved growth during the capture), else :func:`capture_estimate`.

Not covered: torch.compile's code caches are process-wide (dynamo keeps its compiled frames on the UNet's code
object; only ``torch._dynamo.reset()`` clears them, for every user of torch.compile in the process); they hold
kernels, not weights or activations.
"""
from __future__ import annotations

import weakref

from ..samplers.fast_path import CaptureCache, CaptureEvent, report_once, tensor_bytes
from . import contract

RELEASE_KEY = "lcm_pack_fast_path_release"
UNLOADED = "ComfyUI unloaded the model"
UNLOADED_ELSEWHERE = "ComfyUI unloaded the model (through a clone without the fast path)"
DROPPED = "ComfyUI dropped the model"
_UNMATCHED: set = set()  # contact lines reported once per process
_TRACKED: list = []  # the state dictionaries (model object -> state) :func:`release_unloaded` sweeps


def track(states: weakref.WeakKeyDictionary) -> weakref.WeakKeyDictionary:
    """Sweep ``states`` (keyed by the model object a patcher loads) in :func:`release_unloaded`."""
    _TRACKED.append(states)
    return states


def release_unloaded() -> None:
    """Release the state of every model ComfyUI no longer has loaded. The ``ON_DETACH`` callback sees only the
    fast-path clone being unloaded; when another clone of the same model held the device at the unload (a graph
    without the fast path ran in between; a VAE, whose patcher the pack does not own), this sweep, run at every
    fast-path call and fast decode, frees what the callback could not."""
    loaded = contract.loaded_model_ids()
    if loaded is None:
        return
    for states in _TRACKED:
        for model, state in list(states.items()):
            if id(model) not in loaded:
                release(state, UNLOADED_ELSEWHERE)


def release_on_collect(owner, state, why: str) -> None:
    """:func:`release` ``state`` when ``owner`` is garbage-collected (not at interpreter exit: CUDA may be gone)."""
    weakref.finalize(owner, release, state, why).atexit = False


def release_when_dropped(patcher, state) -> None:
    """Release ``state`` when ComfyUI drops ``patcher``'s model: its root patcher (:func:`contract.root_patcher`,
    alive while any clone is) is collected when the checkpoint's graph leaves ComfyUI's cache. Without it the
    state's captured loops and compiled modules keep the model object alive after its patchers died; core's model
    management then finds that model "dead" and runs a full garbage collection before every later job.
    ``state.watched`` holds the roots already registered (one finalizer each)."""
    root = contract.root_patcher(patcher)
    if root not in state.watched:
        state.watched.add(root)
        release_on_collect(root, state, DROPPED)


def watch_unload(patcher, states: weakref.WeakKeyDictionary) -> None:
    """Release ``states[patcher.model]`` (:func:`release`) when ComfyUI unloads ``patcher``'s model."""
    def on_unload(unloaded):
        state = states.get(getattr(unloaded, "model", None))
        if state is not None:
            release(state, UNLOADED)

    mismatch = contract.on_model_unload(patcher, RELEASE_KEY, on_unload)
    if mismatch is not None:
        report_once(_UNMATCHED, mismatch)


def release(state, why: str) -> CaptureEvent | None:
    """Drop a fast-path state's captured entries (graphs, pools, buffers) and compiled modules; the event said,
    None when it held nothing. ``state``: ``comfy_fast_path.ModelState`` (``compiled`` a dict) or
    ``comfy_fast_vae.DecoderState`` (``compiled`` one module or None)."""
    compiled = state.compiled
    count = len(compiled) if isinstance(compiled, dict) else int(compiled is not None)
    if not state.cache.entries and not count:
        return None
    entries, nbytes = state.cache.release(why)
    if isinstance(compiled, dict):
        compiled.clear()
    else:
        state.compiled = None
    for name in ("weight_slots", "slots"):
        if hasattr(state, name):
            setattr(state, name, None)
    event = CaptureEvent("released", f"{why}: {entries} captured loop(s) ({mib(nbytes)}) and {count} compiled "
                         "module(s) freed", 0.0)
    state.cache.record(event)
    return event


def mib(nbytes: int) -> str:
    return f"{nbytes / 2 ** 20:.1f} MiB"


def capture_estimate(base_model, values: dict, steps: int, chunks: int) -> int:
    """Bytes a first capture of the loop will hold: its static inputs (``values``, copied into the buffers), the
    loop's outputs (x and x̂₀ of every step and the result: ``2·steps + 1`` latents) and core's estimate of one
    model call on the batched latent (``BaseModel.memory_required`` of ``chunks·B`` rows; 0 where core has
    none): a graph's private pool holds the peak of the loop's intermediate tensors, one model call's."""
    noise = values["noise"]
    latent = noise.numel() * noise.element_size()
    model = contract.model_memory_required(base_model, [chunks * noise.shape[0], *noise.shape[1:]]) or 0
    return tensor_bytes(values) + (2 * steps + 1) * latent + int(model)


def ask_for_room(cache: CaptureCache, shape_key, guider, estimate, device, reported: set) -> str:
    """Ask ComfyUI to free what the capture of ``shape_key`` will hold: the last capture's size of the key, else
    ``estimate()``; the models the sampling call uses stay loaded. Returns the report fragment."""
    nbytes = cache.sizes.get(shape_key)
    source = "the last capture of this key"
    if nbytes is None:
        nbytes, source = estimate(), "estimate"
    mismatch = contract.free_device_memory(nbytes, device, contract.sampling_patchers(guider))
    if mismatch is not None:
        report_once(reported, mismatch)
        return f"not accounted: {mismatch}"
    return f"asked ComfyUI for {mib(nbytes)} ({source})"
