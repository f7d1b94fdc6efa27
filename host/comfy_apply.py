"""The one way the pack applies LoRAs to ComfyUI models: a stack, checked, patched into one clone, reported.

The loader applies a stack of one entry (its file at its strength); the mixer applies its stack. Steps
(LCM-LoRA, arXiv 2311.05556: the acceleration is a plain low-rank update W + λ·(α/r)·B·A, and a mix is the
weighted sum τ' = Σ λᵢ τᵢ of such updates, so it is merged exactly like any LoRA):

1. **check everything** (:func:`plan_stack`), before anything is patched: each LoRA's family against the
   model's (``model_config`` class); the "already applied" policy (:func:`lora.applied.check_not_applied`:
   a LoRA twice in the stack, a LoRA or a second accelerator the model already carries); coverage -- every
   module must land on a weight of the right shape through core's key maps (``comfy.lora.model_lora_keys_unet``
   / ``model_lora_keys_clip``), else refuse unless ``allow_partial``; the mix itself (roles, finite weights,
   one family: :func:`lora.mix.check_entries`); the patches are built (ranks and shapes agree) before the clone;
2. **patch one clone** of MODEL (and of CLIP when a text-encoder module lands there) with
   ``ModelPatcher.add_patches`` and record the LoRAs in its ``model_options`` (:mod:`lora.applied`);
3. **report** in one format (:func:`stack_report`); the caller (a node) hands the model to LCM sampling when
   :attr:`ApplyResult.lcm_sampling` says an LCM accelerator was applied.

Patches: a stack of one gets core's own ``LoRAAdapter`` built from the resolved tensors (what core's
``LoraLoader`` builds for the same file, at strength λ); a larger stack gets one
:class:`~host.comfy_mixed_adapter.MixedLoRAAdapter` per mixed layer (per-term scales λᵢ·αᵢ/rᵢ, which core's
adapter cannot hold). Adapters only core knows (LoHa, LoKr, DoRA, LoCon, diffs) are parsed by core
(``comfy.lora.load_lora``) from the file's own tensors, at their LoRA's λ.

This module and ``comfy_mixed_adapter`` are the LoRA package's ComfyUI bridges (``comfy_*``); this one imports
comfy only inside functions, so its tables and checks load without ComfyUI.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import accelerators
from ..accelerators.records import family_fits
from ..lora import applied, experts, mix
from ..lora.errors import LoraCoverageError, LoraFamilyMismatch
from ..lora.kinds import is_accelerator, kind_name, sampler_advice, style_weight_advice
from ..lora.resolve import resolve
from ..lora.types import LoraFile, ResolvedLora
from . import contract

LOG = logging.getLogger(__name__)
# ComfyUI model_config class name → family (subclasses are looked up along the MRO).
# The transformer families (accelerators.records.TRANSFORMER_FAMILIES) are core's classes too: Flux2 is named so that
# FLUX.2 (a Flux subclass) is not taken for FLUX.1; WAN22_T2V (the TI2V-5B) derives from WAN21_T2V.
MODEL_FAMILIES = {"SD15": "sd1.x", "SD20": "sd2.x", "SDXL": "sdxl", "SSD1B": "ssd-1b", "Segmind_Vega": "vega",
                  "SDXLRefiner": "sdxl-refiner", "Flux": "flux", "Flux2": "flux2", "SD3": "sd3",
                  "QwenImage": "qwen-image", "WAN21_T2V": "wan", "WAN22_T2V": "wan2.2-5b"}
FAMILY_NAMES = {"sd1.x": "SD1.x", "sd2.x": "SD2.x", "sdxl": "SDXL", "ssd-1b": "SSD-1B", "vega": "Segmind Vega",
                "sdxl-refiner": "SDXL refiner", "unknown": "unknown", "flux": "FLUX.1", "flux2": "FLUX.2",
                "sd3": "SD3", "qwen-image": "Qwen-Image", "wan": "Wan 2.1 / Wan 2.2 A14B",
                "wan2.2-5b": "Wan 2.2 TI2V-5B", "wan-any": "Wan", "mmdit": "MMDiT (FLUX.1, SD3 or Qwen-Image)"}
LCM_LORA_FOR = {"sd1.x": "lcm-lora-sdv1-5", "sdxl": "lcm-lora-sdxl", "ssd-1b": "lcm-lora-ssd-1b",
                "vega": "Segmind-VegaRT (the LCM-LoRA for Vega)"}


def model_family(model_patcher) -> str:
    """The base family of a ComfyUI model, from its ``model_config`` class (e.g. SSD1B → "ssd-1b"; core's
    ``comfy.supported_models`` classes by identity: ``contract.config_family``)."""
    config = model_patcher.model.model_config
    return contract.config_family(config, MODEL_FAMILIES) or type(config).__name__.lower()


def _with_article(phrase: str) -> str:
    """'an SDXL …' / 'a Segmind Vega …' / 'a style …' (SD is read 'es-dee')."""
    return ("an " if phrase[:1] in "AEIOS" and not phrase.startswith("Seg") else "a ") + phrase


def needed_lora(kind: str, family: str) -> str:
    """Which LoRA the user needs for ``family`` (the published LCM-LoRA name where one exists)."""
    if kind == "lcm":
        return LCM_LORA_FOR.get(family, f"an LCM-LoRA trained for {FAMILY_NAMES.get(family, family)}")
    return _with_article(f"{kind_name(kind)} LoRA made for {FAMILY_NAMES.get(family, family)}")


def check_family(lora: LoraFile, family: str) -> None:
    """Raise ``LoraFamilyMismatch`` naming both families and the LoRA to use instead."""
    if family_fits(lora.family, (family,)):
        return
    lora_family = FAMILY_NAMES[lora.family]
    raise LoraFamilyMismatch(
        f"LoRA '{lora.name}' is {_with_article(f'{lora_family} {kind_name(lora.kind)} LoRA')} but "
        f"the model is {FAMILY_NAMES.get(family, family)}: its layers do not fit this model. Use "
        f"{needed_lora(lora.kind, family)} instead (or load {_with_article(lora_family)} model). Nothing was patched.")


def _shapes(module) -> dict:
    return {key: tensor.shape for key, tensor in module.state_dict().items()}


@dataclass(frozen=True)
class KeyMaps:
    """Core's LoRA key maps of a model (and of its CLIP when given) and the weight shapes of both."""

    unet: dict
    clip: dict | None
    shapes: dict

    @property
    def merged(self) -> dict:
        """LoRA spelling → weight key for the UNet and the text encoder together (the export's names)."""
        return {**self.unet, **(self.clip or {})}


def model_key_maps(model, clip) -> KeyMaps:
    """Core's LoRA key maps (``model_lora_keys_unet`` / ``_clip``, each with a fresh dict: ``contract.lora_key_maps``)
    and weight shapes."""
    unet_map, clip_map = contract.lora_key_maps(model, clip)
    shapes = _shapes(model.model)
    if clip is not None:
        shapes.update(_shapes(clip.cond_stage_model))
    return KeyMaps(unet=unet_map, clip=clip_map, shapes=shapes)


@dataclass(frozen=True)
class StackLora:
    """One entry of a request: a LoRA file as read, its weight λ (the loader's strength) and its role."""

    lora: LoraFile
    weight: float
    role: str


def loader_role(kind: str) -> str:
    """The role of the loader's one LoRA: an acceleration kind is the accelerator, anything else a style."""
    return mix.ROLE_STYLE if kind == "style" else mix.ROLE_ACCELERATOR


@dataclass
class StackPlan:
    """A checked stack: its LoRAs resolved onto the model, the weights to apply and the model's key maps.

    ``skipped`` is the model's record entry when the whole request (a stack of one) is already applied;
    ``bypassed`` is set when the stack is one LoRA at weight 0 (nothing to apply, as core's LoraLoader).
    """

    entries: list[mix.MixEntry]
    weights: list[float]
    family: str
    maps: KeyMaps | None = None
    skipped: dict | None = None
    bypassed: str = ""
    expert_lines: list[str] = field(default_factory=list)

    @property
    def passes_through(self) -> bool:
        return self.skipped is not None or bool(self.bypassed)


def _check_coverage(lora: ResolvedLora, family: str, allow_partial: bool) -> None:
    if lora.unmatched and not allow_partial:
        raise LoraCoverageError(
            f"LoRA '{lora.name}': {len(lora.unmatched)} of {lora.total} modules match no weight of this "
            f"{FAMILY_NAMES.get(family, family)} model, e.g. {lora.unmatched[:3]}. They would be silently dropped. "
            "Use a LoRA made for this model (or a file whose keys were not renamed), or set allow_partial "
            f"to apply only the {lora.matched} matching modules. Nothing was patched.")


def plan_stack(model, clip, stack: Sequence[StackLora], allow_partial: bool = False, normalization: str = "none",
               budget: float = 1.0, export: bool = False) -> StackPlan:
    """Step 1: every check, in order, before anything is patched (see the module docstring).

    ``export``: the stack is to be written to a file, not applied (the LoRA Export node): the model's applied
    record is not consulted (the file holds the stack, not the model) and a single LoRA at weight 0 is refused
    like any all-zero mix instead of passing through. The stack's own duplicates are refused either way.
    """
    if not stack:
        raise mix.MixError("the LoRA stack is empty: connect at least one 'LoRA Stack' node.")
    family = model_family(model)
    for item in stack:
        check_family(item.lora, family)
    expert_lines = experts.check_experts([(item.lora.name, item.lora.kind) for item in stack if item.weight != 0.0],
                                         [] if export else applied.applied_loras(model.model_options),
                                         None if export else contract.model_file_name(model))
    pairs = [(item.lora, item.role) for item in stack]
    skipped = applied.check_not_applied({} if export else model.model_options, pairs)
    if skipped is not None:
        return StackPlan(entries=[], weights=[], family=family, skipped={**skipped, "request": stack[0].lora.name})
    if len(stack) == 1 and stack[0].weight == 0.0 and not export:
        return StackPlan(entries=[], weights=[], family=family, bypassed=stack[0].lora.name)
    maps = model_key_maps(model, clip)
    entries = []
    for item in stack:
        resolved = resolve(item.lora, maps.unet, maps.clip, maps.shapes)
        _check_coverage(resolved, family, allow_partial)
        entries.append(mix.MixEntry(lora=resolved, weight=float(item.weight), role=item.role))
    mix.check_entries(entries)
    weights = mix.normalize_style_weights(entries, normalization, budget)
    return StackPlan(entries=entries, weights=weights, family=family, maps=maps, expert_lines=expert_lines)


def _core_adapter_patches(lora: ResolvedLora) -> dict:
    """Patches for the modules only core can apply, parsed by core from the file's own tensors."""
    if not lora.core_targets:
        return {}
    patches = contract.core_lora_patches(lora.core_tensors, lora.core_targets)
    missing = sorted(set(lora.core_targets.values()) - set(patches))
    if missing:
        raise LoraCoverageError(f"LoRA '{lora.name}': ComfyUI core built no patch for {missing[:3]}; "
                                "the adapter type is not supported by this ComfyUI version. Update ComfyUI.")
    return patches


def _single_lora_patches(lora: ResolvedLora, notes: list[str]) -> dict:
    """Core's ``LoRAAdapter`` per weight, built from the resolved tensors (alpha resolved, no mid/DoRA/reshape):
    the adapter core's ``load_lora`` builds for the same kohya module (``contract.lora_patches``)."""
    modules = {target: (module.up, module.down, module.alpha) for target, module in lora.modules.items()}
    return contract.lora_patches(modules, notes) | _core_adapter_patches(lora)


def build_patches(plan: StackPlan, notes: list[str] | None = None) -> list[tuple[float, dict]]:
    """Step 2a: ``[(strength, {weight key: patch})]`` for the whole stack, built before anything is cloned.

    A stack of one: core's adapters at strength λ. A larger stack: one ``MixedLoRAAdapter`` per mixed layer at
    strength 1 (the scales λᵢ·αᵢ/rᵢ are in its rank scale) and each LoRA's core-only adapters at its λᵢ. When
    core's adapter contract differs (``contract.weight_adapter_base``), each LoRA is applied as core's own
    patches at its λᵢ (the same sum ΔW = Σ λᵢ ΔWᵢ, as chained core LoraLoaders) and ``notes`` says why.
    """
    notes = [] if notes is None else notes
    if len(plan.entries) == 1:
        if plan.weights[0] == 0.0:
            return []
        return [(plan.weights[0], _single_lora_patches(plan.entries[0].lora, notes))]
    base = contract.weight_adapter_base()
    if base.adapter is None:
        notes.append(contract.line("weight_adapter_base", base.why, "each LoRA applied as core LoRA patches"))
        return [(weight, _single_lora_patches(entry.lora, notes))
                for entry, weight in zip(plan.entries, plan.weights, strict=True) if weight != 0.0]
    from .comfy_mixed_adapter import mixed_adapter_class

    adapter = mixed_adapter_class(base.adapter)
    mixed = {key: adapter.from_factors(factors) for key, factors in mix.factor_mix(plan.entries, plan.weights).items()}
    groups = [(1.0, mixed)]
    groups += [(weight, _core_adapter_patches(entry.lora))
               for entry, weight in zip(plan.entries, plan.weights, strict=True) if weight != 0.0]
    return [(strength, patches) for strength, patches in groups if patches]


def _split(patches: dict) -> tuple[dict, dict]:
    """(UNet patches, text-encoder patches) by weight key (a key or core's ``(key, slice)`` of a fused weight)."""
    unet = {k: p for k, p in patches.items() if (k if isinstance(k, str) else k[0]).startswith("diffusion_model.")}
    return unet, {k: p for k, p in patches.items() if k not in unet}


def patch_clone(model, clip, plan: StackPlan, groups: list[tuple[float, dict]]) -> tuple[object, object, set]:
    """Step 2b: one clone of MODEL (and of CLIP when a group touches it) carrying every patch; the record of
    each LoRA applied with a non-zero weight. Returns (model, clip, weight keys patched)."""
    wanted = {key for _, patches in groups for key in patches}
    new_model = model.clone()
    needs_clip = clip is not None and any(_split(patches)[1] for _, patches in groups)
    new_clip = clip.clone() if needs_clip else clip
    done: set = set()
    for strength, patches in groups:
        unet, text = _split(patches)
        done |= set(new_model.add_patches(unet, strength))
        if text and new_clip is not None:
            done |= set(new_clip.add_patches(text, strength))
    missing = wanted - done
    if missing:
        raise LoraCoverageError(f"{len(missing)} LoRA layers were not patched by ComfyUI, e.g. {sorted(missing)[0]}.")
    for entry, weight in zip(plan.entries, plan.weights, strict=True):
        if weight != 0.0:
            lora = entry.lora
            applied.record_applied(new_model.model_options, lora.name, lora.sha256, lora.kind, lora.family, weight,
                                   content_sha256=lora.content_sha256, largest=applied.largest_scale(lora.modules))
    return new_model, new_clip, done


def wants_lcm_sampling(plan: StackPlan) -> bool:
    """An LCM accelerator with a non-zero weight was applied: the model is to be sampled with LCM sampling."""
    return any(e.role == mix.ROLE_ACCELERATOR and e.lora.kind == "lcm" and e.weight != 0.0 for e in plan.entries)


@dataclass
class ApplyResult:
    """What :func:`apply_stack` gives the node: the patched (or handed-on) MODEL and CLIP, the report lines, and
    whether an LCM accelerator was applied (the node then hands the model to LCM sampling)."""

    model: object
    clip: object
    lines: list[str] = field(default_factory=list)
    applied: bool = True
    lcm_sampling: bool = False

    @property
    def report(self) -> str:
        return "\n".join(self.lines)


def _entry_lines(entry: mix.MixEntry, weight: float) -> list[str]:
    lora = entry.lora
    lines = [f"LoRA: {lora.name} ({lora.format}, sha256 {lora.sha256[:12]}), role {entry.role}",
             f"  Kind: {lora.kind}",
             f"  weight {entry.weight:g} -> applied {weight:g}, Matched: {lora.matched}/{lora.total} modules "
             f"(UNet {lora.unet_matched}, text encoder {lora.matched - lora.unet_matched})"]
    if lora.unmatched:
        lines.append(f"  PARTIAL: {len(lora.unmatched)} modules NOT applied (allow_partial), e.g. {lora.unmatched[:3]}")
    return lines + [f"  {note}" for note in lora.notes if note.startswith(("alpha", "format"))]


def _advice(plan: StackPlan) -> str:
    if wants_lcm_sampling(plan):
        return sampler_advice("lcm")
    kinds = [e.lora.kind for e, w in zip(plan.entries, plan.weights, strict=True)
             if applied.is_acceleration(e.lora.kind, e.role) and w != 0.0]
    return sampler_advice(kinds[0] if kinds else "style")


def stack_report(plan: StackPlan, patched: int) -> list[str]:
    """Step 3: the one report format, for a stack of one (the loader) as for a mix."""
    if plan.skipped is not None:
        same = plan.skipped
        return [f"'{same['request']}' is already applied to this model (as '{same['name']}', strength "
                f"{same['strength']}): not applied twice."]
    if plan.bypassed:
        return [f"'{plan.bypassed}': weight 0, nothing applied (the model is handed on unchanged, as core's "
                "LoraLoader does at strength 0)."]
    count = len(plan.entries)
    family = plan.entries[0].lora.family
    lines = [f"Applied {count} LoRA{'s' if count != 1 else ''} to one clone, {patched} layers patched "
             "(ΔW = Σ λᵢ·αᵢ/rᵢ·UᵢDᵢ)",
             f"Family: LoRA {FAMILY_NAMES.get(family, family)}, model {FAMILY_NAMES.get(plan.family, plan.family)}"]
    for entry, weight in zip(plan.entries, plan.weights, strict=True):
        lines += _entry_lines(entry, weight)
    return lines + _style_weight_lines(plan) + _strength_lines(plan) + plan.expert_lines + [_advice(plan)]


def _strength_lines(plan: StackPlan) -> list[str]:
    """An accelerator applied at another strength than its authors' (the registry's recipe: AnimateLCM 0.8)."""
    lines = []
    for entry, weight in zip(plan.entries, plan.weights, strict=True):
        recipe = accelerators.recipe_for(entry.lora.kind, entry.lora.name)
        if recipe is not None and weight != 0.0 and abs(weight - recipe.strength) > 1e-6:
            lines.append(f"Strength: the {kind_name(entry.lora.kind)} recipe applies it at {recipe.strength:g} "
                         f"(docs/accelerators.md); '{entry.lora.name}' is applied at {weight:g}.")
    return lines


def _style_weight_lines(plan: StackPlan) -> list[str]:
    """With an accelerator next to style LoRAs: that accelerator's style-weight advice (``lora/kinds.py``)."""
    kinds = [e.lora.kind for e, w in zip(plan.entries, plan.weights, strict=True)
             if (e.role == mix.ROLE_ACCELERATOR or is_accelerator(e.lora.kind)) and w != 0.0]
    if not kinds or len(plan.entries) < 2:
        return []
    return [f"Style weights with {kind_name(kinds[0])}: {style_weight_advice(kinds[0])}"]


def apply_stack(model, clip, stack: Sequence[StackLora], allow_partial: bool = False, normalization: str = "none",
                budget: float = 1.0) -> ApplyResult:
    """Check, patch one clone, report (the module docstring's three steps). The inputs are never modified.

    Raises (before anything is patched) ``LoraFamilyMismatch``, ``LoraAlreadyApplied`` / ``LoraAppliedTwice``,
    ``LoraCoverageError`` (unless ``allow_partial``) or ``MixError``.
    """
    plan = plan_stack(model, clip, stack, allow_partial, normalization, budget)
    if plan.passes_through:
        lines = stack_report(plan, 0)
        LOG.info("%s", lines[0])
        return ApplyResult(model, clip, lines, applied=False)
    notes: list[str] = []
    groups = build_patches(plan, notes)
    new_model, new_clip, done = patch_clone(model, clip, plan, groups)
    return ApplyResult(new_model, new_clip, stack_report(plan, len(done)) + list(dict.fromkeys(notes)),
                       lcm_sampling=wants_lcm_sampling(plan))


def apply_lora(model, clip, lora: LoraFile, strength: float = 1.0, allow_partial: bool = False) -> ApplyResult:
    """The loader's apply: ``lora`` as a stack of one at ``strength`` (role from its kind)."""
    return apply_stack(model, clip, [StackLora(lora, float(strength), loader_role(lora.kind))], allow_partial)


def export_device():
    """ComfyUI's compute device when it is a CUDA GPU (so ``--cpu`` is respected), else the CPU."""
    import comfy.model_management
    import torch

    device = comfy.model_management.get_torch_device()
    return device if device.type == "cuda" else torch.device("cpu")
