"""A model sampling the pack object-patches keeps its own tables under ComfyUI's Dynamic VRAM (issue 21).

What goes wrong. ComfyUI 0.16+ loads models on GPUs with ``ModelPatcherDynamic`` (Dynamic VRAM, the default).
Its ``load`` records every buffer of the model by attribute path (``backup_buffers["model_sampling.sigmas"] =
tensor``), sets a device copy in its place, and at the next load or unload puts the recorded tensors back **by
path** (``restore_loaded_backups``) -- after the next patcher's object patches were applied, or the original
object restored (``comfy/model_patcher.py``, 0.33.0). The path ``model_sampling`` names different objects in
different jobs: the checkpoint's own sampling, the pack's LCM sampling, a preset's. So each receives the other's
tables. After a plain job the pack's LCM sampling got the checkpoint's 1 000-entry σ table in place of its
50-entry grid; its timestep lookup then returned up to 19 999 and the boundary-table read went out of bounds on
the GPU: the server died (runs DV4, DV6 in BENCHMARKS.md §11). The other way round, the checkpoint's own sampling
keeps the LCM grid after an LCM job, and every later plain job on that checkpoint samples on the wrong
timesteps. Core's own ``ModelSamplingDiscrete`` node is exposed the same way (read in 0.33.0): a ComfyUI bug;
the fix users can apply is ``--disable-dynamic-vram``.

What the pack does. A clone that gets one of the pack's model samplings (:func:`protect`) under Dynamic VRAM
also gets an ``ON_LOAD`` callback (ComfyUI's public patcher-extension callbacks; core calls them at the end of
every load). After each load of that clone, while the pack's object is the applied ``model_sampling``, it

1. puts the object's own tables back (the tensors it held when the pack made the clone, on the load device);
2. points the recorded backups of ``model_sampling.*`` at the replaced object's own tensors, and drops the names
   that object lacks -- so the next restore by path gives every object its own tables.

Where core's bookkeeping differs (:class:`~host.contract.ContactMismatch`) the repair is skipped with one report
line; the pack's LCM sampling still samples right, since its own lookups read private copies of its tables
(``comfy_model_sampling.LCMDiscreteGrid``).
"""
from __future__ import annotations

import comfy.patcher_extension as extensions
import torch

from ..samplers.fast_path import report_once
from . import contract

CALLBACK_KEY = "lcm_pack_sampling_tables"
PATCH_NAME = "model_sampling"
_REPORTED: set[str] = set()


def own_tables(sampling: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers ``sampling`` holds directly (its tables), by name: what Dynamic VRAM records and restores."""
    return {name: tensor for name, tensor in sampling.named_buffers(recurse=False) if tensor is not None}


def protect(model_patcher, sampling: torch.nn.Module) -> None:
    """Give ``model_patcher`` (a fresh clone carrying ``sampling`` as its ``model_sampling`` patch) the repair of
    the module docstring when ComfyUI loads it with Dynamic VRAM; a no-op otherwise (0.3.75, 0.8.0, static VRAM)."""
    if not contract.dynamic_vram(model_patcher):
        return
    tables = own_tables(sampling)

    def after_load(patcher, device_to=None, *args, **kwargs):
        repair(patcher, sampling, tables, device_to)

    model_patcher.remove_callbacks_with_key(extensions.CallbacksMP.ON_LOAD, CALLBACK_KEY)
    model_patcher.add_callback_with_key(extensions.CallbacksMP.ON_LOAD, CALLBACK_KEY, after_load)


def repair(patcher, sampling: torch.nn.Module, tables: dict[str, torch.Tensor], device=None) -> list[str]:
    """Steps 1 and 2 of the module docstring for one load of ``patcher``; returns the names put back on
    ``sampling`` (empty when ``sampling`` is not the applied patch). Where core's record cannot be read, step 1
    still runs and step 2 is skipped with the report line."""
    if getattr(patcher.model, PATCH_NAME, None) is not sampling:  # another node's model sampling is applied
        return []
    restored = []
    for name, tensor in tables.items():
        if getattr(sampling, name, None) is not tensor:
            sampling.register_buffer(name, tensor if device is None else tensor.to(device))
            restored.append(name)
    try:
        backups = contract.dynamic_buffer_backups(patcher)
        original = contract.object_patch_original(patcher, PATCH_NAME)
    except contract.ContactMismatch as mismatch:
        report_once(_REPORTED, str(mismatch))
        return restored
    original_tables = own_tables(original) if isinstance(original, torch.nn.Module) else {}
    for key in [key for key in backups if key.startswith(PATCH_NAME + ".")]:
        name = key[len(PATCH_NAME) + 1:]
        if name in original_tables:
            backups[key] = original_tables[name]
        else:
            del backups[key]
    return restored
