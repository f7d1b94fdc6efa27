"""Model sampling objects, model configs and model files.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring."""
from __future__ import annotations

import sys

from ...errors import ContactError
from .base import CHECKED, LINE_PREFIX, ContactMismatch, _resolve, line


def _node_globals(node_id: str, *names: str) -> dict:
    """The module namespace of core node ``node_id``'s function (``nodes.NODE_CLASS_MAPPINGS``; a V1 node's
    ``FUNCTION`` or a V3 node's ``execute``) that holds ``names``: the very objects core's node uses, whatever
    module they are defined in. Empty when none does."""
    mappings = getattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS", None) or {}
    node = mappings.get(node_id)
    for attribute in (str(getattr(node, "FUNCTION", "execute")), "execute", "define_schema"):
        function = getattr(node, attribute, None)
        namespace = getattr(getattr(function, "__func__", function), "__globals__", {})
        if all(name in namespace for name in names):
            return namespace
    return {}


def core_lcm_sampling(model_sampling) -> tuple[int, bool] | None:
    """``(original_timesteps, has the LCM boundary)`` when ``model_sampling`` is core's
    ``ModelSamplingDiscrete(sampling="lcm")`` (``ModelSamplingDiscreteDistilled`` + ``LCM`` of
    ``comfy_extras/nodes_model_advanced.py``; checked on 0.3.75, 0.8.0, 0.33.0), or derives from those classes,
    else None. ComfyUI loads that file twice over: as the module of core's ModelSamplingDiscrete node (a path-named
    module, ``nodes.load_custom_node``) and, for any pack that imports ``comfy_extras.nodes_model_advanced``, under
    that name (AnimateDiff-Evolved builds its ``lcm`` beta schedules on it) -- two sets of classes, both matched by
    identity. When the node's classes cannot be found and an object that looks distilled (``original_timesteps``)
    matches neither set, a pack error: treating it as plain would change the image."""
    def pair(space) -> tuple[type, type] | None:
        distilled, lcm = space.get("ModelSamplingDiscreteDistilled"), space.get("LCM")
        return (distilled, lcm) if isinstance(distilled, type) and isinstance(lcm, type) else None

    node_pair = pair(_node_globals("ModelSamplingDiscrete", "ModelSamplingDiscreteDistilled", "LCM"))
    imported = sys.modules.get("comfy_extras.nodes_model_advanced")  # there only where some pack imported it
    for distilled, lcm in filter(None, (node_pair, pair(vars(imported)) if imported else None)):
        if isinstance(model_sampling, distilled):
            return int(model_sampling.original_timesteps), isinstance(model_sampling, lcm)
    if node_pair is None and hasattr(model_sampling, "original_timesteps"):
        raise ContactError(
            f"{LINE_PREFIX} core_lcm_sampling: core's ModelSamplingDiscreteDistilled / LCM classes are not in "
            f"the namespace of core's ModelSamplingDiscrete node (checked: {CHECKED}), so the pack cannot tell "
            f"whether {type(model_sampling).__name__} is core's LCM sampling. Remove the ModelSamplingDiscrete "
            "(lcm) node (the pack's loader and KSampler (LCM) set LCM sampling themselves).")
    return None


def core_sampling_classes() -> frozenset:
    """The classes of ``comfy.model_sampling`` (EPS, V_PREDICTION, ModelSamplingDiscrete, …), by identity."""
    module = _resolve("comfy.model_sampling")
    return frozenset(value for value in vars(module).values() if isinstance(value, type)) if module else frozenset()


def object_patch(model_patcher, name: str):
    """The object patch ``name`` of ``model_patcher`` (what a node set with ``add_object_patch``), or None when it has
    none: core's ``ModelPatcher.object_patches`` dict, which ``add_object_patch`` writes and ``clone`` copies
    (``comfy/model_patcher.py``; checked on 0.3.75, 0.8.0, 0.33.0). ``get_model_object`` cannot tell a patch from
    the model's own attribute. Not a dict: :class:`ContactMismatch` (the caller treats the model as having no
    chosen patch, with the report line)."""
    patches = getattr(model_patcher, "object_patches", None)
    if not isinstance(patches, dict):
        raise ContactMismatch(line("object_patch", "ModelPatcher.object_patches is not a dict in this ComfyUI",
                                   f"treating {name!r} as not set by another node"))
    return patches.get(name)


def config_family(model_config, families: dict[str, str]) -> str | None:
    """The family of a ``model_config`` whose class is (or derives from) one of core's ``comfy.supported_models``
    classes named in ``families`` (name → family), matched by identity along the MRO; None when none is
    (checked on 0.3.75, 0.8.0, 0.33.0; a renamed class is simply not matched)."""
    module = _resolve("comfy.supported_models")
    table = {getattr(module, name): family for name, family in families.items() if getattr(module, name, None)}
    for cls in type(model_config).__mro__:
        if cls in table:
            return table[cls]
    return None


def model_file_name(model_patcher) -> str | None:
    """The file name a model was loaded from, where core records it: ``ModelPatcher.cached_patcher_init`` =
    ``(comfy.sd.load_diffusion_model, (unet_path, model_options))`` (UNETLoader) or
    ``(comfy.sd.load_checkpoint_guess_config, (ckpt_path, …), 0)`` (checkpoint loaders), recognised by identity
    (``comfy/model_patcher.py`` / ``comfy/sd.py`` of 0.33.0; 0.3.75 has no such attribute). None otherwise: the
    caller says in its report that the file is not known (nothing falls back: only a check is skipped)."""
    init = getattr(model_patcher, "cached_patcher_init", None)
    loaders = [_resolve("comfy.sd", name) for name in ("load_diffusion_model", "load_checkpoint_guess_config")]
    if not isinstance(init, tuple) or len(init) < 2 or not any(init[0] is f for f in loaders if f is not None):
        return None
    args = init[1]
    path = args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else None
    return path.replace("\\", "/").rsplit("/", 1)[-1] if path else None


def dynamic_buffer_backups(model_patcher) -> dict:
    """Dynamic VRAM's record of the model's buffers: ``ModelPatcher.backup_buffers`` (``comfy/model_patcher.py``,
    ``ModelPatcherDynamic.load`` / ``restore_loaded_backups``; checked on 0.33.0): ``{attribute path: the tensor
    the path held before the load}``, one dict shared by every clone of a model, put back **by path** at the next
    load or unload. Hosts without Dynamic VRAM (0.3.75, 0.8.0) never call the pack's repair. Not a dict:
    :class:`ContactMismatch`."""
    backups = getattr(model_patcher, "backup_buffers", None)
    if not isinstance(backups, dict):
        raise ContactMismatch(line("dynamic_buffer_backups", "ModelPatcher.backup_buffers is not a dict in this "
                                   "ComfyUI", "the model sampling's tables are not re-checked after a Dynamic VRAM load"))
    return backups


def object_patch_original(model_patcher, name: str):
    """The object an object patch ``name`` replaced while the patch is applied: ``ModelPatcher.object_patches_backup``
    (``comfy/model_patcher.py`` ``patch_model`` fills it, ``unpatch_model`` puts it back; checked on 0.3.75, 0.8.0,
    0.33.0), or None when nothing is recorded. Not a dict: :class:`ContactMismatch`."""
    backups = getattr(model_patcher, "object_patches_backup", None)
    if not isinstance(backups, dict):
        raise ContactMismatch(line("object_patch_original", "ModelPatcher.object_patches_backup is not a dict in "
                                   "this ComfyUI", "the model sampling's tables are not re-checked after a load"))
    return backups.get(name)
