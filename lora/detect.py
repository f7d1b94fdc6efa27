"""Base-family and kind detection of a LoRA from its tensor shapes, names and metadata (pure).

Family, from the UNet's cross-attention input width (the ``to_k``/``to_v`` of ``attn2`` read the text
context) and the transformer layout:

* context 768 → SD1.x; 1024 → SD2.x; 2048 → SDXL family, then by depth (ComfyUI ``supported_models``):
  SDXL has a middle-block transformer and 10-deep down stacks ([0,0,2,2,10,10]); SSD-1B has no middle
  transformer and 4-deep down stacks ([0,0,2,2,4,4]); Segmind Vega neither and at most 2 ([0,0,1,1,2,2]).
* text-encoder-only LoRAs: hidden 768 (CLIP-L) → SD1.x, 1024 (OpenCLIP-H) → SD2.x, 1280 or a second
  encoder (``lora_te2_`` / ``text_encoder_2.``) → SDXL family.

Kind (what it was distilled for; the kinds and their sources are in ``kinds.py``), decided by the first
signal that names one, in this order:

1. metadata: the pack's own (``lcmpack.kind``, or the accelerator recorded in an exported mix's
   ``lcmpack.sources``), then modelspec (``modelspec.title``/``description``/``tags``) and kohya
   (``ss_output_name``, ``ss_training_comment``) text;
2. the file name (the authors' published names, ``kinds.NAME_PATTERNS``);
3. the content (``kind_from_content``): the shape the authors' training script gives a file. Only the
   LCM-LoRAs have a published recipe precise enough: diffusers' ``train_lcm_distill_lora_sd_wds.py`` (and its
   SDXL twin) puts one ``LoraConfig(r=64, lora_alpha=…)`` on ``to_q/to_k/to_v/to_out.0, proj_in/proj_out,
   ff.net.0.proj/ff.net.2, conv1/conv2/conv_shortcut, down/upsamplers, time_emb_proj`` of the UNet and nothing
   else. A file trained by kohya's scripts (``ss_network_module`` in its metadata) is never matched by content.

Otherwise "style". The evidence string says which signal decided.
"""
from __future__ import annotations

import re
from dataclasses import replace

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


def detect_family(lora: LoraFile) -> tuple[str, str]:
    """``(family, evidence)`` of a LoRA from shapes; raises ``LoraFormatError`` for unknown architectures."""
    names = module_names(lora.modules, lora.extra)
    parts = [module_part(n) for n in names]
    unet = [inner for part, inner in parts if part == "unet"]
    text = [inner for part, inner in parts if part != "unet"]
    if (unet and not any(UNET_STRUCTURE.match(n) for n in unet)) or (text and not any(TEXT_STRUCTURE.search(n)
                                                                                      for n in text)):
        example = names[0]
        raise LoraFormatError(f"LoRA '{lora.name}' is for an unknown architecture (module names like '{example}' "
                              "are not an SD1.x/SD2.x/SDXL UNet or CLIP text encoder; Flux, SD3 and video-model "
                              "LoRAs are not supported). Use a LoRA made for your Stable Diffusion model.")
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
KOHYA_TRAINING_KEYS = ("ss_network_module", "ss_training_started_at", "ss_session_id")
LCM_SCRIPT_RANK = 64
# Module groups of diffusers' LCM-LoRA script, in diffusers and in LDM (ComfyUI) spelling, "_" separators.
LCM_SCRIPT_GROUPS = {
    "attention": re.compile(r"(attn[12]_(processor_)?to_(q|k|v|out_0)|to_out_0)$"),
    "feed-forward": re.compile(r"ff_net_(0_proj|2)$"),
    "resnet": re.compile(r"(resnets_\d+_conv[12]|in_layers_2|out_layers_3)$"),
    "time-embedding": re.compile(r"(time_emb_proj|emb_layers_1)$"),
}


def _pack_metadata_kind(metadata: dict) -> str | None:
    """The kind the pack itself wrote: ``lcmpack.kind``, or the single accelerator of an exported mix (read by
    the validating reader ``lora/metadata.py``: malformed or unknown values are ignored)."""
    own = read_pack_metadata(metadata, kinds.is_accelerator, kinds.STYLE)
    return own.kind or own.sources_kind


def kind_from_metadata(metadata: dict) -> tuple[str, str] | None:
    """``(kind, where)`` named by the file's metadata, or None."""
    own = _pack_metadata_kind(metadata)
    if own is not None:
        return own, "the pack's own metadata"
    for key in KIND_METADATA_KEYS:
        if key in metadata:
            kind = kinds.kind_from_text(str(metadata[key]))
            if kind is not None:
                return kind, f"metadata {key} '{str(metadata[key])[:60]}'"
    return None


def kind_from_content(lora: LoraFile) -> tuple[str, str] | None:
    """``("lcm", why)`` when the file has the shape of diffusers' LCM-LoRA script output (module docstring)."""
    if any(key in lora.metadata for key in KOHYA_TRAINING_KEYS) or not lora.modules or lora.extra:
        return None
    parts = [(module_part(name), module) for name, module in lora.modules.items()]
    if any(part != "unet" for (part, _), _ in parts):
        return None
    ranks = {module.rank for _, module in parts}
    alphas = {round(float(module.alpha), 6) for _, module in parts}
    if ranks != {LCM_SCRIPT_RANK} or len(alphas) != 1:
        return None
    inner = [name for (_, name), _ in parts]
    groups = {group for group, pattern in LCM_SCRIPT_GROUPS.items() if any(pattern.search(n) for n in inner)}
    if groups != set(LCM_SCRIPT_GROUPS):
        return None
    return "lcm", (f"content: rank {LCM_SCRIPT_RANK} with one alpha ({alphas.pop():g}) on attention, feed-forward, "
                   "resnet and time-embedding layers of the UNet only, as diffusers' LCM-LoRA script writes it")


def detect_kind(lora: LoraFile) -> tuple[str, str]:
    """``(kind, evidence)``: metadata, then file name, then content (module docstring); else "style"."""
    found = kind_from_metadata(lora.metadata)
    if found is not None:
        return found[0], f"kind: {found[0]} (decided by {found[1]})"
    kind = kinds.kind_from_text(lora.name)
    if kind is not None:
        return kind, f"kind: {kind} (decided by the file name '{lora.name[:60]}')"
    found = kind_from_content(lora)
    if found is not None:
        return found[0], f"kind: {found[0]} (decided by {found[1]})"
    ranks = sorted({m.rank for m in lora.modules.values()})
    return kinds.STYLE, (f"kind: style (no accelerator named in metadata or file name, content unlike a published "
                         f"accelerator; ranks {ranks[:4]})")


def with_kind(lora: LoraFile, kind: str) -> LoraFile:
    """``lora`` with ``kind`` set by the user (the loader's ``kind`` input); "auto" keeps the detected kind."""
    if kind in (None, "", "auto") or kind == lora.kind:
        return lora
    if kind != kinds.STYLE and not kinds.is_accelerator(kind):
        raise LoraFormatError(f"kind={kind!r} is unknown; use auto, style or one of {list(kinds.KINDS)}.")
    notes = [n for n in lora.notes if not n.startswith("kind:")]
    notes.append(f"kind: {kind} (set by the loader's kind input; detected: {lora.kind})")
    return replace(lora, kind=kind, notes=notes)
