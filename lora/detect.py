"""Base-family and kind detection of a LoRA from its tensor shapes, names and metadata (pure).

Family, from the UNet's cross-attention input width (the ``to_k``/``to_v`` of ``attn2`` read the text
context) and the transformer layout:

* context 768 → SD1.x; 1024 → SD2.x; 2048 → SDXL family, then by depth (ComfyUI ``supported_models``):
  SDXL has a middle-block transformer and 10-deep down stacks ([0,0,2,2,10,10]); SSD-1B has no middle
  transformer and 4-deep down stacks ([0,0,2,2,4,4]); Segmind Vega neither and at most 2 ([0,0,1,1,2,2]).
* text-encoder-only LoRAs: hidden 768 (CLIP-L) → SD1.x, 1024 (OpenCLIP-H) → SD2.x, 1280 or a second
  encoder (``lora_te2_`` / ``text_encoder_2.``) → SDXL family.

Kind (what it was distilled for) from the file name and descriptive metadata: LCM (LCM-LoRA, arXiv
2311.05556; Segmind VegaRT), TCD (arXiv 2402.19159), Hyper-SD, SDXL-Lightning, DMD2; otherwise "style".
"""
from __future__ import annotations

import re

from .errors import LoraFormatError
from .formats import module_names, peft_component
from .types import LoraFile

FAMILIES = ("sd1.x", "sd2.x", "sdxl", "ssd-1b", "vega")
CONTEXT_FAMILY = {768: "sd1.x", 1024: "sd2.x", 2048: "sdxl"}
TEXT_HIDDEN_FAMILY = {768: "sd1.x", 1024: "sd2.x", 1280: "sdxl"}
# Order matters: a "Hyper-SD ... TCD" file is Hyper-SD; an "LCM" mention inside another kind loses.
KIND_PATTERNS = (
    ("hyper-sd", re.compile(r"hyper[-_ ]?sd", re.I)),
    ("tcd", re.compile(r"(^|[^a-z])tcd([^a-z]|$)", re.I)),
    ("lightning", re.compile(r"lightning", re.I)),
    ("dmd2", re.compile(r"dmd2?", re.I)),
    ("lcm", re.compile(r"(^|[^a-z])lcm|latent[-_ ]consistency|vegart", re.I)),
)
KIND_METADATA_KEYS = ("modelspec.title", "modelspec.description", "ss_output_name", "ss_training_comment",
                      "modelspec.tags", "name", "description")
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


def detect_kind(lora: LoraFile) -> tuple[str, str]:
    """``(kind, evidence)``: an acceleration kind named in the file name or metadata, else "style"."""
    sources = [("file name", lora.name)] + [(key, str(lora.metadata[key])) for key in KIND_METADATA_KEYS
                                           if key in lora.metadata]
    for kind, pattern in KIND_PATTERNS:
        for where, text in sources:
            if pattern.search(text):
                return kind, f"kind: {kind} ({where} '{text[:60]}')"
    ranks = sorted({m.rank for m in lora.modules.values()})
    return "style", f"kind: style (no acceleration LoRA named in file name or metadata; ranks {ranks[:4]})"
