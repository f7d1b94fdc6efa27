"""Reuse of the LCM/TCD-patched model clone across executions of the one-node sampler.

ComfyUI tracks loaded models per ``ModelPatcher`` object (``comfy.model_management.LoadedModel``): a new clone
on every execution makes it unload the previous clone, re-run the object-patch bookkeeping and rebuild the
sampling object (measured on an H100: +4 ms SD1.5, +7 ms SDXL per 4-step run; docs/performance.md). The
executor hands the *same* input object while the upstream nodes are unchanged, so the clone is kept per input
object and returned again while the input's state is the one it was made from.

Lifetime. The table has weak keys (the input patchers). A clone's ``parent`` would point at its input and keep
the key alive forever, so the cached clone is re-parented to the input's own parent (ComfyUI only reads
``parent`` to hand the loaded weights to a live ancestor when a clone dies). When the input is collected its
entry goes, the clone dies with it and ComfyUI falls back to the input's parent, as it does for any clone.

Validity. A clone copies the input's weight patches, object patches, model options, wrappers, callbacks,
attachments and hooks. :func:`patcher_state` fingerprints them (values for immutables, weak identity for the
rest) so that an input changed in place gets a new clone; older states of a living input are kept (at most
``MAX_STATES_PER_MODEL``) so a clone is never dropped while ComfyUI may still hold it as loaded.

The fingerprint is derived from the patcher's own attributes (``vars``; ``ModelPatcher.clone`` in
``comfy/model_patcher.py``, checked on ComfyUI 0.3.75, 0.8.0, 0.33.0) minus :data:`NOT_STATE`, the attributes
decided not to be inherited sampling state: an attribute a new ComfyUI adds is fingerprinted by default (more
re-clones, never a stale clone), and ``tests/test_contract.py`` fails until someone decides on it.
"""
from __future__ import annotations

import enum
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

MAX_STATES_PER_MODEL = 4
_WALK_DEPTH = 5
_VALUE_TYPES = (str, bytes, int, float, complex, bool, type(None), uuid.UUID, torch.dtype, torch.device, enum.Enum)
# Attributes of a ModelPatcher that are not part of the fingerprint, and why.
NOT_STATE = {
    "model": "compared by identity, first in the fingerprint",
    "patches": "covered by patches_uuid and the number of patched keys",
    "parent": "re-pointed by this cache; read by ComfyUI only to hand weights to a live ancestor",
    "size": "derived from the model's weights, set lazily by model_size()",
    "backup": "per-load bookkeeping: weights a load replaced", "backup_buffers": "per-load bookkeeping",
    "object_patches_backup": "per-load bookkeeping", "pinned": "per-load bookkeeping: pinned host memory",
    "hook_backup": "per-load bookkeeping of hook weights", "hook_patches_backup": "per-load bookkeeping",
    "cached_hook_patches": "a cache of hook weights, rebuilt on demand", "is_injected": "per-load: injections applied",
    "cached_patcher_init": "how to rebuild a non-dynamic delegate, not how the model samples",
    "non_dynamic_delegate_model": "a cache of the dynamic patcher's non-dynamic copy",
}
# Attributes fingerprinted with a special rule (the rest: _fingerprint of the value, depth _WALK_DEPTH).
_SHALLOW = {"current_hooks": 0, "forced_hooks": 0}
# Every attribute decided on (fingerprinted or not) on the checked ComfyUI versions: tests/test_contract.py.
STATE = ("object_patches", "model_options", "weight_wrapper_patches", "attachments", "additional_models",
         "callbacks", "wrappers", "injections", "hook_patches", "current_hooks", "forced_hooks", "force_cast_weights",
         "patches_uuid", "load_device", "offload_device", "weight_inplace_update", "hook_mode", "is_clip",
         "skip_injection", "clone_base_uuid", "is_multigpu_base_clone")


class _Same:
    """A leaf of a fingerprint: equal only to a leaf of the very same (still living) object.

    Holds a weak reference where the object allows one, so the fingerprint never keeps the input alive.
    """

    __slots__ = ("_get", "_id")

    def __init__(self, obj) -> None:
        self._id = id(obj)
        try:
            self._get = weakref.ref(obj)
        except TypeError:  # not weak-referenceable: compared by id (it lives in the input while that lives)
            self._get = None

    def __eq__(self, other) -> bool:
        if not isinstance(other, _Same) or self._id != other._id:
            return False
        if self._get is None or other._get is None:
            return self._get is other._get
        return self._get() is not None and self._get() is other._get()

    __hash__ = None


def _fingerprint(value, depth: int = _WALK_DEPTH):
    """Nested tuples mirroring dicts / lists / tuples; immutables by value, other objects by identity."""
    if isinstance(value, _VALUE_TYPES):
        return value
    if depth > 0 and isinstance(value, dict):
        return ("dict",) + tuple((_fingerprint(k, 0), _fingerprint(v, depth - 1)) for k, v in value.items())
    if depth > 0 and isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_fingerprint(v, depth - 1) for v in value)
    return _Same(value)


def _attribute(name: str, value):
    if name == "hook_patches":  # weight patches per hook: the hooks (keys) say which apply
        return _fingerprint(tuple(value or {}))
    return _fingerprint(value, _SHALLOW.get(name, _WALK_DEPTH))


def patcher_state(model_patcher) -> tuple:
    """What a clone of ``model_patcher`` inherits from it, as a comparable fingerprint: the model (identity), the
    patches (uuid, count), the model sampling in force, and every attribute not in :data:`NOT_STATE`."""
    return (
        _Same(model_patcher.model), model_patcher.patches_uuid, len(model_patcher.patches),
        _Same(model_patcher.get_model_object("model_sampling")),
        tuple((name, _attribute(name, value)) for name, value in sorted(vars(model_patcher).items())
              if name not in NOT_STATE),
    )


@dataclass(frozen=True)
class _Entry:
    key: object  # what the caller distinguishes (boundary / constants)
    state: tuple
    patched: object


_CLONES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # input ModelPatcher -> list[_Entry]


def reused_clone(model_patcher, key, make: Callable[[object], object]):
    """``make(model_patcher)``'s result, made once per (input object, ``key``, input state) and reused.

    ``make`` must return a clone of the input (or the input itself, which is returned and not cached).
    The input is never mutated.
    """
    state = patcher_state(model_patcher)
    entries = _CLONES.get(model_patcher, [])
    for entry in entries:
        if entry.key == key and entry.state == state:
            return entry.patched
    patched = make(model_patcher)
    if patched is model_patcher:
        return patched
    patched.parent = model_patcher.parent  # see module docstring: the weak key must not be kept alive
    entries = [*entries, _Entry(key, state, patched)][-MAX_STATES_PER_MODEL:]
    _CLONES[model_patcher] = entries
    return patched


def cached_clone_count(model_patcher) -> int:
    """How many patched clones are kept for this input model (for tests and diagnostics)."""
    return len(_CLONES.get(model_patcher, []))
