"""Base-family and kind detection of a LoRA from its tensor shapes, names and metadata (pure).

Family, from the UNet's cross-attention input width (the ``to_k``/``to_v`` of ``attn2`` read the text
context) and the transformer layout:

* context 768 → SD1.x; 1024 → SD2.x; 2048 → SDXL family, then by depth (ComfyUI ``supported_models``):
  SDXL has a middle-block transformer and 10-deep down stacks ([0,0,2,2,10,10]); SSD-1B has no middle
  transformer and 4-deep down stacks ([0,0,2,2,4,4]); Segmind Vega neither and at most 2 ([0,0,1,1,2,2]).
* text-encoder-only LoRAs: hidden 768 (CLIP-L) → SD1.x, 1024 (OpenCLIP-H) → SD2.x, 1280 or a second
  encoder (``lora_te2_`` / ``text_encoder_2.``) → SDXL family.

Kind (what it was distilled for; the kinds and their sources are in ``accelerators/registry.py``), decided by the first
signal that names one, in this order:

1. metadata: the pack's own (``lcmpack.kind``, or the accelerator recorded in an exported mix's
   ``lcmpack.sources``), then modelspec (``modelspec.title``/``description``/``tags``) and kohya
   (``ss_output_name``, ``ss_training_comment``) text;
2. the file name (the authors' published names: the registry's name rules, linear-time and bounded,
   ``accelerators/match.py``; only kinds of LoRAs the loader applies: a FLUX accelerator's name on an SD LoRA
   does not make it one);
3. the content (``kind_from_content``): a registry record's content signature, the shape the authors'
   training script gives a file. Only the LCM-LoRAs have a published recipe precise enough: diffusers' ``train_lcm_distill_lora_sd_wds.py`` (and its
   SDXL twin) puts one ``LoraConfig(r=64, lora_alpha=…)`` on ``to_q/to_k/to_v/to_out.0, proj_in/proj_out,
   ff.net.0.proj/ff.net.2, conv1/conv2/conv_shortcut, down/upsamplers, time_emb_proj`` of the UNet and nothing
   else. A file trained by kohya's scripts (``ss_network_module`` in its metadata) is never matched by content.

Otherwise "style". The evidence string says which signal decided.
"""
from __future__ import annotations

import re
from dataclasses import replace

from .. import accelerators
from ..accelerators import ContentSignature
from ..accelerators.records import FAMILY_GROUPS, kind_fits_family
from . import kinds
from .errors import LoraFormatError
from .formats import module_names, peft_component
from .metadata import read_pack_metadata
from .types import LoraFile

FAMILIES = ("sd1.x", "sd2.x", "sdxl", "ssd-1b", "vega")
CONTEXT_FAMILY = {768: "sd1.x", 1024: "sd2.x", 2048: "sdxl"}
TEXT_HIDDEN_FAMILY = {768: "sd1.x", 1024: "sd2.x", 1280: "sdxl"}
UNET_STRUCTURE = re.compile(r"(input_blocks|middle_block|output_blocks|down_blocks|mid_block|up_blocks|"
                            r"time_embed|conv_in|conv_out|label_emb|add_embedding|out_0|out_2)")
TEXT_STRUCTURE = re.compile(r"text_model|encoder_layers|encoder\.layers")
# Transformer families core maps LoRA keys for (accelerators.records.TRANSFORMER_FAMILIES), by module-name markers
# (``_`` separators): core's own names (kohya ``lora_unet_``, ``diffusion_model.``) and diffusers' (``transformer.``).
TRANSFORMER_MARKERS = (
    ("flux", re.compile(r"(^|_)(double_blocks|single_blocks|single_transformer_blocks)_\d")),
    ("sd3", re.compile(r"(^|_)joint_blocks_\d")),
    ("qwen-image", re.compile(r"(^|_)transformer_blocks_\d+_(img_mlp|txt_mlp|img_mod|txt_mod)")),
    ("wan-any", re.compile(r"^blocks_\d+_(self_attn|cross_attn|ffn)")),
    ("mmdit", re.compile(r"(^|_)transformer_blocks_\d+_(attn_add_[qkv]_proj|attn_to_add_out|ff_context|norm1_context)")),
)


def module_part(module: str) -> tuple[str, str]:
    """``("unet"|"te"|"te2", name with _ separators)`` for any supported module spelling."""
    for prefix, part in (("lora_unet_", "unet"), ("lora_te2_", "te2"), ("lora_te1_", "te"), ("lora_te_", "te")):
        if module.startswith(prefix):
            return part, module[len(prefix):]
    prefix, inner = peft_component(module)
    if prefix.startswith("text_encoder_2"):
        return "te2", inner.replace(".", "_")
    if prefix.startswith("text_encoder"):
        return "te", inner.replace(".", "_")
    if inner.startswith("diffusion_model."):
        inner = inner[len("diffusion_model."):]
    return "unet", inner.replace(".", "_")


def _sdxl_variant(unet_names: list[str]) -> tuple[str, str]:
    """SDXL / SSD-1B / Vega from the transformer depths seen in the module names."""
    depth_down, has_middle, depth_any = -1, False, -1
    for name in unet_names:
        match = re.search(r"transformer_blocks_(\d+)_", name)
        index = int(match[1]) if match else -1
        depth_any = max(depth_any, index)
        if name.startswith(("middle_block_1", "mid_block_attentions")):
            has_middle = True
        elif name.startswith(("input_blocks", "down_blocks")):
            depth_down = max(depth_down, index)
    if has_middle or depth_down >= 4:
        return "sdxl", "middle-block transformer or a down stack deeper than 4 blocks"
    if depth_any >= 2:
        return "ssd-1b", "no middle transformer, stacks up to 4 (10 in one up stack) blocks deep"
    if depth_any >= 0:
        return "vega", "no middle transformer, stacks at most 2 blocks deep"
    return "sdxl", "no transformer blocks covered: SDXL family assumed (depth unknown)"


def _detection_only_advice(lora: LoraFile) -> str:
    """For a record the loader does not load (``Accelerator.loadable`` False: a form or family it does not patch),
    what it is and how its authors sample it with core's nodes."""
    found = kind_from_metadata(lora.metadata, loadable_only=False)
    kind = found[0] if found is not None else kinds.kind_from_text(lora.name)
    record = accelerators.get(kind) if kind else None
    if record is None or record.loadable:
        return ""
    return f" It is {record.title} ({', '.join(record.families)}): {record.advice}"


def transformer_family(unet_names: list[str]) -> tuple[str, str] | None:
    """``(family, evidence)`` of a LoRA whose modules are a transformer family's that core maps (names with ``_``
    separators, as :func:`module_part` gives them), or None (an SD UNet, or no transformer block named).

    The markers (:data:`TRANSFORMER_MARKERS`, first family first) are the block names of core's and diffusers'
    layouts. Names that only say "an MMDiT-style block" (diffusers' ``transformer_blocks.N.attn.add_q_proj``, shared
    by FLUX's double blocks, SD3 and Qwen-Image) give the group ``mmdit``; Wan's give ``wan-any`` (Wan 2.1 / 2.2
    A14B and the 5B share the names); the kind's record narrows a group (:func:`narrow_family`). Names of two
    families in one file are refused."""
    found: dict[str, str] = {}
    for name in unet_names:
        for family, pattern in TRANSFORMER_MARKERS:
            if family not in found and pattern.search(name):
                found[family] = name
                break
    if len(found) > 1 and "mmdit" in found and set(found) - {"mmdit"} <= set(FAMILY_GROUPS["mmdit"]):
        found.pop("mmdit")
    if not found:
        return None
    if len(found) > 1:
        raise LoraFormatError(f"module names of {len(found)} model families in one LoRA ({dict(list(found.items())[:3])}"
                              "): it fits no single model. Use a LoRA made for your model.")
    family, example = next(iter(found.items()))
    return family, f"family: {family} (module names like '{example[:80]}')"


def detect_family(lora: LoraFile) -> tuple[str, str]:
    """``(family, evidence)`` of a LoRA from shapes; raises ``LoraFormatError`` for unknown architectures."""
    names = module_names(lora.modules, lora.extra)
    parts = [module_part(n) for n in names]
    unet = [inner for part, inner in parts if part == "unet"]
    text = [inner for part, inner in parts if part != "unet"]
    transformer = transformer_family(unet)
    if transformer is not None:
        return transformer
    if (unet and not any(UNET_STRUCTURE.match(n) for n in unet)) or (text and not any(TEXT_STRUCTURE.search(n)
                                                                                      for n in text)):
        example = names[0]
        raise LoraFormatError(f"LoRA '{lora.name}' is for an unknown architecture (module names like '{example}' "
                              "are not an SD1.x/SD2.x/SDXL UNet, a CLIP text encoder, or a FLUX.1/SD3/Qwen-Image/Wan "
                              "transformer). Use a LoRA made for one of these models."
                              + _detection_only_advice(lora))
    for module, lora_module in lora.modules.items():
        part, inner = module_part(module)
        if part == "unet" and re.search(r"attn2_(processor_)?to_[kv]$", inner):
            width = int(lora_module.down.shape[1])
            family = CONTEXT_FAMILY.get(width)
            if family is None:
                raise LoraFormatError(f"LoRA '{lora.name}': cross-attention width {width} matches no SD family "
                                      "(768 SD1.x, 1024 SD2.x, 2048 SDXL); use a LoRA for your model.")
            if family == "sdxl":
                family, why = _sdxl_variant(unet)
                return family, f"family: {family} (context width 2048; {why})"
            return family, f"family: {family} (cross-attention context width {width})"
    if any(part == "te2" for part, _ in parts):
        return "sdxl", "family: sdxl (second text encoder present; UNet depth not covered)"
    for module, lora_module in lora.modules.items():
        part, inner = module_part(module)
        if part == "te" and inner.endswith("q_proj"):
            family = TEXT_HIDDEN_FAMILY.get(int(lora_module.down.shape[1]), "unknown")
            return family, f"family: {family} (text-encoder width {int(lora_module.down.shape[1])})"
    return "unknown", "family: undetermined (no cross-attention or text-encoder module to measure)"


KIND_METADATA_KEYS = ("modelspec.title", "modelspec.description", "modelspec.tags", "ss_output_name",
                      "ss_training_comment", "name", "description")
# What name detection reads of the metadata: each field's first ``accelerators.FIELD_LIMIT`` characters, and at
# most this many characters over all fields (issue 22, item 6: a 1 MB title costs what its first KiB costs).
METADATA_TEXT_LIMIT = 8 * 1024


def _pack_metadata_kind(metadata: dict) -> str | None:
    """The kind the pack itself wrote: ``lcmpack.kind``, or the single accelerator of an exported mix (read by
    the validating reader ``lora/metadata.py``: malformed or unknown values are ignored)."""
    own = read_pack_metadata(metadata, kinds.is_loadable, kinds.STYLE)
    return own.kind or own.sources_kind


def kind_from_metadata(metadata: dict, loadable_only: bool = True, family: str | None = None) -> tuple[str, str] | None:
    """``(kind, where)`` named by the file's metadata, or None. Reads bounded text (:data:`METADATA_TEXT_LIMIT`).
    ``loadable_only``: only kinds of LoRAs the loader applies (False: detection-only records too, to name a refused
    file); ``family``: only kinds of records for that measured family (``kinds.kind_from_text``)."""
    own = _pack_metadata_kind(metadata)
    if own is not None:
        return own, "the pack's own metadata"
    budget = METADATA_TEXT_LIMIT
    for key in KIND_METADATA_KEYS:
        if key in metadata and budget > 0:
            value = metadata[key]
            text = (value if isinstance(value, str) else str(value)[:accelerators.FIELD_LIMIT])[
                :min(accelerators.FIELD_LIMIT, budget)]
            budget -= len(text)
            kind = kinds.kind_from_text(text, loadable_only, family)
            if kind is not None:
                return kind, f"metadata {key} '{text[:60]}'"
    return None


def _signature_holds(signature: ContentSignature, lora: LoraFile) -> bool:
    """Whether ``lora`` has the shape ``signature`` describes (``accelerators.records.ContentSignature``)."""
    if any(key in lora.metadata for key in signature.refuse_metadata) or not lora.modules or lora.extra:
        return False
    parts = [(module_part(name), module) for name, module in lora.modules.items()]
    if signature.unet_only and any(part != "unet" for (part, _), _ in parts):
        return False
    alphas = {round(float(module.alpha), 6) for _, module in parts}
    if {module.rank for _, module in parts} != {signature.rank} or (signature.one_alpha and len(alphas) != 1):
        return False
    inner = [name for (_, name), _ in parts]
    return all(any(re.search(pattern, n) for n in inner) for pattern in signature.groups.values())


def kind_from_content(lora: LoraFile) -> tuple[str, str] | None:
    """``(kind, why)`` of the first registry record whose content signature the file has (today: LCM-LoRA, the
    shape of diffusers' LCM-LoRA script output; module docstring)."""
    for record in accelerators.records():
        if record.content is not None and _signature_holds(record.content, lora):
            alpha = next(iter(lora.modules.values())).alpha
            return record.kind, f"content: {record.content.description} (alpha {float(alpha):g})"
    return None


def detect_kind(lora: LoraFile) -> tuple[str, str]:
    """``(kind, evidence)``: metadata, then file name, then content (module docstring); else "style"."""
    found = kind_from_metadata(lora.metadata, family=lora.family)
    if found is not None:
        return found[0], f"kind: {found[0]} (decided by {found[1]})"
    kind = kinds.kind_from_text(lora.name, loadable_only=True, family=lora.family)
    if kind is not None:
        return kind, f"kind: {kind} (decided by the file name '{lora.name[:60]}')"
    found = kind_from_content(lora)
    if found is not None:
        return found[0], f"kind: {found[0]} (decided by {found[1]})"
    ranks = sorted({m.rank for m in lora.modules.values()})
    return kinds.STYLE, (f"kind: style (no accelerator named in metadata or file name, content unlike a published "
                         f"accelerator; ranks {ranks[:4]})")


def narrow_family(family: str, kind: str) -> tuple[str, str]:
    """A family group (``mmdit``, ``wan-any``: names alone fit several) narrowed to the one family of the kind's
    record that is in the group; ``(family, note)``, the note empty when nothing was narrowed."""
    record = accelerators.get(kind)
    if family not in FAMILY_GROUPS or record is None:
        return family, ""
    fits = [f for f in record.families if f in FAMILY_GROUPS[family]]
    if len(fits) != 1:
        return family, ""
    return fits[0], f"family: {fits[0]} (module names fit {family}; the {record.title} record is for {fits[0]})"


def with_kind(lora: LoraFile, kind: str) -> LoraFile:
    """``lora`` with ``kind`` set by the user (the loader's ``kind`` input); "auto" keeps the detected kind."""
    if kind in (None, "", "auto") or kind == lora.kind:
        return lora
    if kind != kinds.STYLE and not kinds.is_loadable(kind):
        raise LoraFormatError(f"kind={kind!r} is unknown; use auto or one of {list(kinds.known_kinds())}.")
    record = accelerators.get(kind)
    if record is not None and not kind_fits_family(lora.family, record.families):
        raise LoraFormatError(f"kind={kind!r} is {record.title}, for {', '.join(record.families)} LoRAs; "
                              f"'{lora.name}' is a {lora.family} LoRA. Use auto or a kind of its family.")
    notes = [n for n in lora.notes if not n.startswith("kind:")]
    notes.append(f"kind: {kind} (set by the loader's kind input; detected: {lora.kind})")
    family, note = narrow_family(lora.family, kind)
    return replace(lora, kind=kind, family=family, notes=notes + ([note] if note else []))
