"""Memory the host can see: the fast path's captures asked for, and released when ComfyUI unloads the model.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring. Every function
here falls back with a report line (the fast path then runs without the accounting), never raises."""
from __future__ import annotations

from .base import _binds, _resolve, line


def on_model_unload(patcher, key: str, callback) -> str | None:
    """Register ``callback(patcher)`` on ``patcher`` (the pack's own clone) to run when ComfyUI unloads the model
    from its device; None, or the report line when it cannot be registered (nothing registered then).

    Core: ``ModelPatcher.detach(unpatch_all)`` runs the ``comfy.patcher_extension.CallbacksMP.ON_DETACH``
    callbacks as ``callback(patcher, unpatch_all)`` after moving the weights off the device
    (``comfy/model_patcher.py``). ``LoadedModel.model_unload`` calls ``detach(unpatch_weights=True)``: that is
    ``free_memory`` (another model or a VAE decode needing room, ``unload_all_models``, the server's ``/free``).
    ``load_models_gpu`` calls ``detach(unpatch_all=False)`` when another clone of the same model takes the
    device (its weights stay where they are, in use): not an unload, the callback does not run. Registered with
    ``add_callback_with_key`` after ``remove_callbacks_with_key`` (one per key; clones copy callbacks). Not
    ``ON_CLEANUP``: ``CFGGuider.outer_sample`` calls ``cleanup()`` after every sampling call. Checked on 0.3.75,
    0.8.0, 0.33.0 (same names, same arguments)."""
    kind = _resolve("comfy.patcher_extension", "CallbacksMP", "ON_DETACH")
    add = getattr(patcher, "add_callback_with_key", None)
    remove = getattr(patcher, "remove_callbacks_with_key", None)
    if kind is None or not callable(add) or not callable(remove):
        return line("on_model_unload", "CallbacksMP.ON_DETACH / ModelPatcher.add_callback_with_key are gone",
                    "the fast path's graphs are freed only with the model object")

    def on_detach(detached, unpatch_all=True, *_):
        if unpatch_all:
            callback(detached)

    remove(kind, key)
    add(kind, key, on_detach)
    return None


def inference_reserve() -> int:
    """The bytes core keeps free beyond a model's weights when it loads one: ``comfy.model_management.
    minimum_inference_memory()`` (0.8 GiB plus ``--reserve-vram``), what ``load_models_gpu`` asks ``free_memory``
    for on top of ``memory_required``; checked on 0.3.75, 0.8.0, 0.33.0. 0 when the function is gone."""
    reserve = _resolve("comfy.model_management", "minimum_inference_memory")
    try:
        return int(reserve()) if callable(reserve) else 0
    except (TypeError, ValueError):
        return 0


def free_device_memory(nbytes: int, device, keep=()) -> str | None:
    """Ask ComfyUI for ``nbytes`` on ``device`` before a capture that will hold them: core's
    ``comfy.model_management.free_memory(nbytes + inference_reserve(), device, keep_loaded=...)`` -- the request
    ``load_models_gpu`` makes for a model load -- which unloads other loaded models (least used first) until that
    much is free. ``keep_loaded`` holds the entries of ``comfy.model_management.current_loaded_models`` whose
    ``model`` is one of the patchers in ``keep`` (the model being sampled and its ControlNets: never unloaded for
    their own capture), built as core's ``unload_model_and_clones`` (0.33.0) builds it. Checked on 0.3.75, 0.8.0,
    0.33.0 (0.33.0 adds keyword arguments with defaults). Returns None, or the report line when the contact
    does not match (nothing is asked then)."""
    free_memory = _resolve("comfy.model_management", "free_memory")
    loaded = _resolve("comfy.model_management", "current_loaded_models")
    if free_memory is None or not isinstance(loaded, list) or not _binds(free_memory, 0, device, keep_loaded=[]):
        return line("free_device_memory", "comfy.model_management.free_memory(memory_required, device, "
                    "keep_loaded=) / current_loaded_models are gone or re-signed", "capturing without asking")
    kept = [entry for entry in loaded if any(getattr(entry, "model", None) is patcher for patcher in keep)]
    free_memory(int(nbytes) + inference_reserve(), device, keep_loaded=kept)
    return None


def sampling_patchers(guider) -> list:
    """The patchers a sampling call has loaded: ``guider.model_patcher`` and ``guider.loaded_models`` (the
    additional models -- ControlNets, hooks' models -- ``CFGGuider.outer_sample`` keeps from
    ``comfy.sampler_helpers.prepare_sampling`` while it samples); checked on 0.3.75, 0.8.0, 0.33.0. Missing
    attributes give fewer patchers (those could then be unloaded for the capture: core reloads them)."""
    patchers = [getattr(guider, "model_patcher", None), *(getattr(guider, "loaded_models", None) or [])]
    return [patcher for patcher in patchers if patcher is not None]


def model_memory_required(base_model, shape, cond_shapes: dict | None = None) -> float | None:
    """Core's estimate of the memory one model call on an input of ``shape`` needs: ``BaseModel.memory_required(
    input_shape, cond_shapes=)`` (``comfy/model_base.py``; what ``prepare_sampling`` reserves); checked on 0.3.75,
    0.8.0, 0.33.0. None when the method is gone or re-signed."""
    required = getattr(base_model, "memory_required", None)
    if required is None or not _binds(required, list(shape), cond_shapes=cond_shapes or {}):
        return None
    return required(list(shape), cond_shapes=cond_shapes or {})


def root_patcher(patcher):
    """The patcher ``patcher`` was cloned from, followed to the first (the checkpoint loader's): core's
    ``ModelPatcher.clone`` sets ``n.parent = self`` (a strong reference), so the root lives exactly as long as
    some clone of it does, and ComfyUI has dropped the model when the root is collected. ``patcher`` itself where
    there is no ``parent`` attribute. Checked on 0.3.75, 0.8.0, 0.33.0 (``ModelPatcher.__init__``/``clone``)."""
    seen = set()
    while getattr(patcher, "parent", None) is not None and id(patcher) not in seen:
        seen.add(id(patcher))
        patcher = patcher.parent
    return patcher


def loaded_model_ids() -> set[int] | None:
    """``id`` of the model object (``ModelPatcher.model``: a ``BaseModel``, a VAE's ``first_stage_model``) of every
    patcher ComfyUI has loaded now: ``comfy.model_management.loaded_models()`` (``current_loaded_models``' patchers;
    checked on 0.3.75, 0.8.0, 0.33.0). None when the function is gone (nothing is swept then)."""
    loaded = _resolve("comfy.model_management", "loaded_models")
    if not callable(loaded):
        return None
    return {id(getattr(patcher, "model", None)) for patcher in loaded()}
