"""LoRA: key maps, core's adapters and patches.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ContactError
from .base import CHECKED, LINE_PREFIX, _binds, _parameters, _resolve, line


def lora_key_maps(model_patcher, clip) -> tuple[dict, dict | None]:
    """Core's LoRA key maps ``comfy.lora.model_lora_keys_unet(model.model, {})`` and ``model_lora_keys_clip(
    clip.cond_stage_model, {})`` (``comfy/lora.py``; checked on 0.3.75, 0.8.0, 0.33.0). Without them no LoRA can
    be matched to the model, so a pack error naming the contact."""
    unet_keys = _resolve("comfy.lora", "model_lora_keys_unet")
    clip_keys = _resolve("comfy.lora", "model_lora_keys_clip")
    if unet_keys is None or clip_keys is None or not _binds(unet_keys, model_patcher.model, {}):
        raise ContactError(f"{LINE_PREFIX} lora_key_maps: comfy.lora.model_lora_keys_unet / model_lora_keys_clip "
                           f"are gone or re-signed in this ComfyUI (checked: {CHECKED}); nothing was patched. Use "
                           "core's LoraLoader, or a ComfyUI version the pack supports.")
    clip_map = clip_keys(clip.cond_stage_model, {}) if clip is not None else None
    return unet_keys(model_patcher.model, {}), clip_map


@dataclass(frozen=True)
class AdapterCheck:
    """Whether core's ``LoRAAdapter`` has the layout the pack builds; ``why`` says what differed."""

    adapter: type | None
    why: str = ""


def lora_adapter_layout() -> AdapterCheck:
    """``comfy.weight_adapter.lora.LoRAAdapter(loaded_keys, weights)`` with ``weights = (up, down, alpha, mid,
    dora_scale, reshape)``, probed through core's own ``LoRAAdapter.load`` on a 1×1 LoRA (checked on 0.3.75,
    0.8.0, 0.33.0)."""
    adapter = _resolve("comfy.weight_adapter.lora", "LoRAAdapter")
    if adapter is None:
        return AdapterCheck(None, "comfy.weight_adapter.lora.LoRAAdapter is gone")
    probe = {"probe.lora_up.weight": torch.ones(1, 1), "probe.lora_down.weight": torch.ones(1, 1)}
    try:
        built = adapter.load("probe", probe, 1.0, None)
    except Exception as error:  # noqa: BLE001  (any failure of core's loader means: do not build it by hand)
        return AdapterCheck(None, f"LoRAAdapter.load(x, lora, alpha, dora_scale) failed ({type(error).__name__})")
    weights = getattr(built, "weights", None)
    if not isinstance(weights, tuple) or len(weights) != 6 or weights[3:] != (None, None, None):
        size = len(weights) if isinstance(weights, tuple) else type(weights).__name__
        return AdapterCheck(None, f"LoRAAdapter.weights has {size} fields (checked: 6)")
    if _parameters(adapter.__init__)[1:] != ("loaded_keys", "weights"):
        return AdapterCheck(None, "LoRAAdapter's constructor is not (loaded_keys, weights)")
    return AdapterCheck(adapter)


def lora_patches(modules: dict, notes: list[str]) -> dict:
    """``{weight key: patch}`` for plain LoRA modules ``{weight key: (up, down, alpha)}``: core's ``LoRAAdapter``
    as ``comfy.lora.load_lora`` builds it. When its layout differs (:func:`lora_adapter_layout`), the patches are
    built by core's ``load_lora`` itself from kohya-named tensors (same patches), with a note."""
    check = lora_adapter_layout()
    if check.adapter is not None:
        return {key: check.adapter(set(), (up, down, float(alpha), None, None, None))
                for key, (up, down, alpha) in modules.items()}
    notes.append(line("lora_patches", check.why, "patches built by core's comfy.lora.load_lora"))
    tensors, targets = {}, {}
    for index, (key, (up, down, alpha)) in enumerate(modules.items()):
        name = f"lcmpack_{index}"
        tensors |= {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
                    f"{name}.alpha": torch.tensor(float(alpha))}
        targets[name] = key
    return core_lora_patches(tensors, targets)


def core_lora_patches(tensors: dict, targets: dict) -> dict:
    """``comfy.lora.load_lora(lora, to_load, log_missing=False)`` (``comfy/lora.py``: core's parser of every
    adapter type; checked on 0.3.75, 0.8.0, 0.33.0). A pack error naming it when gone or re-signed."""
    load = _resolve("comfy.lora", "load_lora")
    if load is None or not _binds(load, tensors, targets, log_missing=False):
        raise ContactError(f"{LINE_PREFIX} core_lora_patches: comfy.lora.load_lora(lora, to_load, log_missing) is "
                           f"gone or re-signed (checked: {CHECKED}); nothing was patched. Use core's LoraLoader.")
    return load(tensors, targets, log_missing=False)


# What core passes to an adapter's calculate_weight (comfy/lora.py calculate_weight), after self.
ADAPTER_CALCULATE_WEIGHT = ("weight", "key", "strength", "strength_model", "offset", "function", "intermediate_dtype",
                            "original_weight")


def weight_adapter_base() -> AdapterCheck:
    """Core's adapter contract the mixer's adapter must satisfy: base class ``comfy.weight_adapter.
    WeightAdapterBase`` (``comfy.lora.calculate_weight`` dispatches on it), constructor ``(loaded_keys, weights)``
    (0.33's Dynamic VRAM rebuilds adapters as ``type(a)(a.loaded_keys, prefetched a.weights)`` in
    ``comfy.lora.prefetch_prepared_value``), and ``calculate_weight`` taking :data:`ADAPTER_CALCULATE_WEIGHT`
    (read off core's ``LoRAAdapter``). Checked on 0.3.75, 0.8.0, 0.33.0."""
    base = _resolve("comfy.weight_adapter", "WeightAdapterBase")
    core_lora = _resolve("comfy.weight_adapter.lora", "LoRAAdapter")
    if base is None or core_lora is None or not issubclass(core_lora, base):
        return AdapterCheck(None, "comfy.weight_adapter.WeightAdapterBase (the base of LoRAAdapter) is gone")
    if _parameters(core_lora.__init__)[1:] != ("loaded_keys", "weights"):
        return AdapterCheck(None, "weight adapters are no longer built as (loaded_keys, weights)")
    if _parameters(core_lora.calculate_weight)[1:] != ADAPTER_CALCULATE_WEIGHT:
        found = ", ".join(_parameters(core_lora.calculate_weight)[1:])
        return AdapterCheck(None, f"an adapter's calculate_weight takes ({found}) (checked: "
                                  f"{', '.join(ADAPTER_CALCULATE_WEIGHT)})")
    return AdapterCheck(base)
