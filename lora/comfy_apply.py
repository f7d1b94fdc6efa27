"""Apply a :class:`LoraFile` to ComfyUI models through core (the one module of ``lora`` that imports comfy).

Steps (LCM-LoRA, arXiv 2311.05556: the acceleration is a plain low-rank update W + s·(α/r)·B·A, so it is
merged exactly like any LoRA):

1. family check: the LoRA's family (shapes) against the model's (``model_config`` class);
2. coverage: every module must land on a weight of the right shape through core's key maps
   (``comfy.lora.model_lora_keys_unet`` / ``model_lora_keys_clip``), else refuse unless ``allow_partial``;
3. patches from core's adapters (``comfy.lora.load_lora``) on a *clone* (``ModelPatcher.add_patches``);
4. a record in ``model_options`` so the same acceleration LoRA is never stacked twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import applied
from .detect import module_part
from .errors import LoraAlreadyApplied, LoraCoverageError, LoraFamilyMismatch
from .kinds import KIND_NAMES, SAMPLER_ADVICE  # noqa: F401 (re-exported: mix_support reads them here)
from .resolve import core_state_dict, match_modules, module_names
from .types import LoraFile

LOG = logging.getLogger(__name__)
# ComfyUI model_config class name → family (subclasses are looked up along the MRO).
MODEL_FAMILIES = {"SD15": "sd1.x", "SD20": "sd2.x", "SDXL": "sdxl", "SSD1B": "ssd-1b", "Segmind_Vega": "vega",
                  "SDXLRefiner": "sdxl-refiner"}
FAMILY_NAMES = {"sd1.x": "SD1.x", "sd2.x": "SD2.x", "sdxl": "SDXL", "ssd-1b": "SSD-1B", "vega": "Segmind Vega",
                "sdxl-refiner": "SDXL refiner", "unknown": "unknown"}
LCM_LORA_FOR = {"sd1.x": "lcm-lora-sdv1-5", "sdxl": "lcm-lora-sdxl", "ssd-1b": "lcm-lora-ssd-1b",
                "vega": "Segmind-VegaRT (the LCM-LoRA for Vega)"}


@dataclass
class ApplyResult:
    model: object
    clip: object
    lines: list[str] = field(default_factory=list)
    applied: bool = True

    @property
    def report(self) -> str:
        return "\n".join(self.lines)


def model_family(model_patcher) -> str:
    """The base family of a ComfyUI model, from its ``model_config`` class (e.g. SSD1B → "ssd-1b")."""
    for cls in type(model_patcher.model.model_config).__mro__:
        if cls.__name__ in MODEL_FAMILIES:
            return MODEL_FAMILIES[cls.__name__]
    return type(model_patcher.model.model_config).__name__.lower()


def _with_article(phrase: str) -> str:
    """'an SDXL …' / 'a Segmind Vega …' / 'a style …' (SD is read 'es-dee')."""
    return ("an " if phrase[:1] in "AEIOS" and not phrase.startswith("Seg") else "a ") + phrase


def needed_lora(kind: str, family: str) -> str:
    """Which LoRA the user needs for ``family`` (the published LCM-LoRA name where one exists)."""
    if kind == "lcm":
        return LCM_LORA_FOR.get(family, f"an LCM-LoRA trained for {FAMILY_NAMES.get(family, family)}")
    return _with_article(f"{KIND_NAMES.get(kind, kind)} LoRA made for {FAMILY_NAMES.get(family, family)}")


def check_family(lora: LoraFile, family: str) -> None:
    """Raise ``LoraFamilyMismatch`` naming both families and the LoRA to use instead."""
    if lora.family == "unknown" or lora.family == family:
        return
    lora_family = FAMILY_NAMES[lora.family]
    raise LoraFamilyMismatch(
        f"LoRA '{lora.name}' is {_with_article(f'{lora_family} {KIND_NAMES.get(lora.kind, lora.kind)} LoRA')} but "
        f"the model is {FAMILY_NAMES.get(family, family)}: its layers do not fit this model. Use "
        f"{needed_lora(lora.kind, family)} instead (or load {_with_article(lora_family)} model). Nothing was patched.")


def _shapes(module) -> dict:
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


def model_key_maps(model, clip):
    """Core's LoRA key maps (``model_lora_keys_unet`` / ``_clip``, each with a fresh dict) and weight shapes."""
    import comfy.lora

    unet_map = comfy.lora.model_lora_keys_unet(model.model, {})
    shapes = _shapes(model.model)
    clip_map = {}
    if clip is not None:
        clip_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
        shapes.update(_shapes(clip.cond_stage_model))
    return unet_map, clip_map, shapes


def coverage(lora: LoraFile, model, clip, maps: tuple | None = None) -> tuple[dict, dict, list[str]]:
    """``(unet matches, clip matches, unmatched)``; text-encoder modules go to CLIP only when it is given.

    ``maps`` is :func:`model_key_maps` of ``model``/``clip`` when the caller already has it (the mixer
    resolves several files against one model and builds the maps once); by default it is computed here.
    """
    unet_map, clip_map, shapes = maps if maps is not None else model_key_maps(model, clip)
    unet_matched, unmatched = match_modules(lora, unet_map, shapes)
    clip_matched: dict = {}
    if unmatched:
        rest = LoraFile(**{**lora.__dict__, "modules": {k: v for k, v in lora.modules.items() if k in unmatched},
                           "extra": {k: v for k, v in lora.extra.items()
                                     if any(k.startswith(u + ".") for u in unmatched)}})
        clip_matched, unmatched = match_modules(rest, clip_map, shapes)
        if clip is None:
            unmatched = [f"{u} (text-encoder module: connect the CLIP input)"
                         if module_part(u.split(" ")[0])[0] != "unet" else u for u in unmatched]
    return unet_matched, clip_matched, unmatched


def core_patches(lora: LoraFile, matched: dict) -> dict:
    """ComfyUI patches (core's own adapters via ``comfy.lora.load_lora``) for the matched modules."""
    import comfy.lora

    state, to_load = core_state_dict(lora, matched)
    patches = comfy.lora.load_lora(state, to_load, log_missing=False)
    missing = sorted(set(to_load.values()) - set(patches))
    if missing:
        raise LoraCoverageError(f"LoRA '{lora.name}': ComfyUI core built no patch for {missing[:3]}; "
                                "the adapter type is not supported by this ComfyUI version. Update ComfyUI.")
    return patches


def _check_not_stacked(lora: LoraFile, model) -> ApplyResult | None:
    same = applied.find_same_file(model.model_options, lora.sha256, lora.content_sha256)
    if same is not None:
        line = (f"'{lora.name}' is already applied to this model (as '{same['name']}', strength "
                f"{same['strength']}): not applied twice.")
        LOG.info(line)
        return ApplyResult(model, None, [line], applied=False)
    previous = applied.find_acceleration(model.model_options)
    if previous is not None and lora.kind != "style":
        raise LoraAlreadyApplied(
            f"LoRA '{lora.name}' ({lora.kind}) would stack on '{previous['name']}' ({previous['kind']}), an "
            "acceleration LoRA this model already carries: two acceleration LoRAs over-bake the image. Remove "
            "one of the loaders, or mix them on purpose with the LoRA Mixer.")
    return None


def apply_lora(model, clip, lora: LoraFile, strength: float = 1.0, allow_partial: bool = False) -> ApplyResult:
    """Patch clones of ``model`` (and ``clip``) with ``lora``; the inputs are never modified.

    Raises ``LoraFamilyMismatch``, ``LoraCoverageError`` (unless ``allow_partial``) or
    ``LoraAlreadyApplied`` before anything is patched.
    """
    family = model_family(model)
    check_family(lora, family)
    skipped = _check_not_stacked(lora, model)
    if skipped is not None:
        skipped.clip = clip
        return skipped
    unet_matched, clip_matched, unmatched = coverage(lora, model, clip)
    total = len(module_names(lora))
    if unmatched and not allow_partial:
        raise LoraCoverageError(
            f"LoRA '{lora.name}': {len(unmatched)} of {total} modules match no weight of this "
            f"{FAMILY_NAMES.get(family, family)} model, e.g. {unmatched[:3]}. They would be silently dropped. "
            "Use a LoRA made for this model (or a file whose keys were not renamed), or set allow_partial "
            f"to apply only the {total - len(unmatched)} matching modules. Nothing was patched.")
    unet_patches = core_patches(lora, unet_matched) if unet_matched else {}
    clip_patches = core_patches(lora, clip_matched) if clip_matched else {}
    patched = model.clone()
    patched.add_patches(unet_patches, strength)
    applied.record_applied(patched.model_options, lora.name, lora.sha256, lora.kind, lora.family, strength,
                           content_sha256=lora.content_sha256)
    patched_clip = clip
    if clip is not None and clip_patches:
        patched_clip = clip.clone()
        patched_clip.add_patches(clip_patches, strength)
    lines = [f"LoRA: {lora.name} ({lora.format}, sha256 {lora.sha256[:12]})",
             f"Family: LoRA {FAMILY_NAMES.get(lora.family, lora.family)}, model {FAMILY_NAMES.get(family, family)}",
             f"Kind: {lora.kind}",
             f"Matched: {len(unet_matched) + len(clip_matched)}/{total} modules (UNet {len(unet_matched)}, "
             f"text encoder {len(clip_matched)}), strength {strength:g}"]
    if unmatched:
        lines.append(f"PARTIAL: {len(unmatched)} modules NOT applied (allow_partial), e.g. {unmatched[:3]}")
    lines += [note for note in lora.notes if note.startswith(("alpha", "format"))]
    lines.append(SAMPLER_ADVICE.get(lora.kind, SAMPLER_ADVICE["style"]))
    return ApplyResult(patched, patched_clip, lines)
