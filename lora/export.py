"""Export of a LoRA mix as one kohya-format LoRA file (concat: exact; svd: rank-reduced, error measured).

Key format: kohya ``lora_unet_<diffusers module name with _>`` / ``lora_te_…`` (``lora_te1_``/``lora_te2_`` for
two text encoders) with ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha`` — the format of the published
LCM-LoRA files. ComfyUI core maps these names (``comfy.lora.model_lora_keys_unet/clip``) and diffusers
``load_lora_weights`` converts them (``_convert_non_diffusers_lora_to_diffusers``). Alpha is the exported
rank of the file (the largest layer rank) and is the *same for every layer*; a layer of rank r < alpha has
its up factor multiplied by r/alpha so that (alpha/r)·up·down is still exactly the mixed ΔW. One alpha for
the whole file is needed by diffusers: its kohya converter names the alphas of attention layers
``….processor.to_q_lora.down.weight.alpha`` (``_get_alpha_name`` splits on ``.lora.``), PEFT's alpha_pattern
then matches nothing and those layers fall back to the file's most common alpha (measured with diffusers
0.42.1: per-layer alphas left attention weights 17 % off; one alpha matches to float precision).

Factors are written in the chosen save dtype (``fp16`` by default, like the published LCM-LoRAs; ``bf16``;
``fp32`` for a bit-exact concat); alpha tensors are always float32 (an integer rank above 256 is not exact in
bf16, above 2048 not in fp16). The reported errors are measured on the factors *as written*, i.e. after the
cast, against the exact mix of equation (1), so they are the true errors of the file.

Metadata (safetensors header, all str; lists/dicts JSON-encoded) under ``lcmpack.*``: sources (name, sha256,
format, role, weight as given and as applied), base family, accelerator, mode, rank, save dtype, measured errors.
"""
from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .batched import CHUNK_BYTES, chunked, difference_norms_sq, matrix_2d, shape_groups
from .errors import ExportError
from .mix import MixEntry, accelerator_names, check_entries, concat_mix, mix_terms
from .svd import ReductionReport, default_device, full_precision_matmul, reduce_modules
from .types import LoraModule

LOG = logging.getLogger(__name__)

MODES = ("concat", "svd")
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DEFAULT_SAVE_DTYPE = "fp16"
_LDM_UNET_PREFIXES = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_",
                      "lora_unet_time_embed_", "lora_unet_label_emb_", "lora_unet_out_")


@dataclass
class ExportResult:
    """Tensors and metadata of the exported LoRA plus the measured errors."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    modules: dict[str, LoraModule]
    report: ReductionReport = field(default_factory=ReductionReport)
    rank: int = 0


def _name_priority(name: str, two_text_encoders: bool) -> int:
    """Lower is better: diffusers-spelled kohya UNet names, then text-encoder names, LDM spelling last."""
    if name.startswith("lora_unet_"):
        return 1 if name.startswith(_LDM_UNET_PREFIXES) else 0
    if name.startswith(("lora_te1_", "lora_te2_")):
        return 0 if two_text_encoders else 1
    if name.startswith("lora_te_"):
        return 1 if two_text_encoders else 0
    return 9


def kohya_names(key_map: Mapping[str, object]) -> dict[str, str]:
    """Target weight key → kohya module name, chosen from ComfyUI's own key map (lora name → target key).

    The UNet gets the diffusers spelling (``lora_unet_down_blocks_0_…``), which both ComfyUI and diffusers
    map; text encoders get ``lora_te_`` (one encoder) or ``lora_te1_``/``lora_te2_`` (SDXL).
    """
    two = any(name.startswith("lora_te2_") for name in key_map)
    best: dict[str, tuple[int, str]] = {}
    for name, target in key_map.items():
        if not isinstance(target, str) or not name.startswith(("lora_unet_", "lora_te")):
            continue
        rank = (_name_priority(name, two), name)
        if target not in best or rank < best[target]:
            best[target] = rank
    return {target: name for target, (priority, name) in best.items() if priority < 9}


def module_tensors(name: str, module: LoraModule) -> dict[str, torch.Tensor]:
    """The three kohya tensors of one module (factors as they are; alpha as a float32 scalar)."""
    return {f"{name}.lora_down.weight": module.down.contiguous(),
            f"{name}.lora_up.weight": module.up.contiguous(),
            f"{name}.alpha": torch.tensor(float(module.alpha), dtype=torch.float32)}


def save_dtype_of(save_dtype: str) -> torch.dtype:
    """The torch dtype of a save-dtype name ('fp16', 'bf16', 'fp32')."""
    if save_dtype not in SAVE_DTYPES:
        raise ExportError(f"save dtype {save_dtype!r} is unknown; use one of {tuple(SAVE_DTYPES)} "
                          f"({DEFAULT_SAVE_DTYPE} is what published LoRAs use).")
    return SAVE_DTYPES[save_dtype]


def _written(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype`` on the CPU with storage of its own (safetensors refuses tensors that share one;
    the SVD returns views of one buffer per shape group)."""
    out = tensor.to(device="cpu", dtype=dtype)
    if out.untyped_storage().nbytes() != out.numel() * out.element_size():
        out = out.clone()
    return out


def cast_modules(modules: Mapping[str, LoraModule], dtype: torch.dtype) -> dict[str, LoraModule]:
    """The modules with their factors in ``dtype`` on the CPU (what is written), alpha unchanged."""
    return {key: LoraModule(down=_written(m.down, dtype), up=_written(m.up, dtype), alpha=m.alpha)
            for key, m in modules.items()}


def uniform_alpha(modules: Mapping[str, LoraModule], alpha: float) -> dict[str, LoraModule]:
    """Same ΔW with one alpha for all layers: up ← up·scale·r/alpha (see the module docstring)."""
    out = {}
    for key, module in modules.items():
        factor = module.scale * module.rank / alpha
        out[key] = LoraModule(down=module.down, up=module.up * factor, alpha=float(alpha))
    return out


def _measure_signature(module: LoraModule, terms: Sequence[tuple[float, LoraModule]]) -> tuple:
    """Shapes and dtypes of a written module and of its mix terms: layers with equal signatures stack."""
    parts = [module, *(term for _, term in terms)]
    return tuple((tuple(m.up.shape), tuple(m.down.shape), m.up.dtype, m.down.dtype) for m in parts)


def _stack_difference(modules: Sequence[LoraModule], terms: Sequence[Sequence[tuple[float, LoraModule]]],
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stacked float64 factors L = [λ₁s₁U₁ | … | −s_w·U_w], R = [D₁; …; D_w] on ``device`` and the column
    count of the reference part (so that L R = ΔW_ref − ΔW_written and L[:, :split] R[:split] = ΔW_ref).

    The stacks are assembled on the CPU in a dtype that holds the sources exactly (float64 for a CPU
    ``device``, else float32 or wider), moved once, and scaled by λᵢ·sᵢ in float64 on ``device``.
    """
    parts_of = [[*(term for _, term in layer_terms), module] for module, layer_terms in zip(modules, terms,
                                                                                           strict=True)]
    scales = torch.tensor([[weight * term.scale for weight, term in layer_terms] + [module.scale]
                           for module, layer_terms in zip(modules, terms, strict=True)], dtype=torch.float64)
    sources = [m.up.dtype for m in parts_of[0]] + [m.down.dtype for m in parts_of[0]]
    host_dtype = torch.float64 if device.type == "cpu" else functools.reduce(torch.promote_types, sources,
                                                                           torch.float32)
    ranks = [m.rank for m in parts_of[0]]
    left = torch.empty(len(modules), parts_of[0][0].up.shape[0], sum(ranks), dtype=host_dtype)
    right = torch.empty(len(modules), sum(ranks), matrix_2d(parts_of[0][0].down).shape[1], dtype=host_dtype)
    for index, parts in enumerate(parts_of):
        torch.cat([matrix_2d(m.up) for m in parts], dim=1, out=left[index])
        torch.cat([matrix_2d(m.down) for m in parts], dim=0, out=right[index])
    column_scales = torch.repeat_interleave(scales, torch.tensor(ranks), dim=1)
    column_scales[:, -ranks[-1]:] *= -1  # the written part is subtracted: L R = ΔW_ref − ΔW_written
    left = left.to(device=device, dtype=torch.float64) * column_scales.to(device)[:, None, :]
    return left, right.to(device=device, dtype=torch.float64), sum(ranks[:-1])


def measure_concat(entries: Sequence[MixEntry], weights: Sequence[float], modules: Mapping[str, LoraModule],
                   device: torch.device, chunk_bytes: int = CHUNK_BYTES) -> ReductionReport:
    """Relative error of the written modules against equation (1), ΔW = Σ λᵢ·sᵢ·UᵢDᵢ, per layer and in total.

    Nothing out x in is built: ‖ΔW − U_w D_w‖ and ‖ΔW‖ come from the stacked factors [λ₁s₁U₁ | … | −s_w U_w] and
    [D₁; …; D_w] in float64 (:func:`lora.batched.difference_norms_sq`: accurate to ~1e-13 relative, so an exact
    fp32 concat, ~1e-7, is still measured and not rounding noise). Layers with equal factor shapes are stacked
    (chunks of at most ``chunk_bytes`` of float64 factors) and each stack costs one transfer back.
    """
    report = ReductionReport()
    terms = mix_terms(entries, weights)
    keys = list(modules)
    results: dict[str, tuple[float, float]] = {}
    with full_precision_matmul():
        for group in shape_groups(keys, lambda key: _measure_signature(modules[key], terms[key])):
            parts = [modules[group[0]], *(term for _, term in terms[group[0]])]
            columns = sum(m.rank for m in parts)
            item_bytes = 8 * columns * (parts[0].up.shape[0] + matrix_2d(parts[0].down).shape[1])
            for chunk in chunked(group, item_bytes, chunk_bytes):
                left, right, split = _stack_difference([modules[k] for k in chunk], [terms[k] for k in chunk],
                                                       device)
                error_sq, norm_sq = difference_norms_sq(left, right, split)
                pairs = torch.stack([error_sq, norm_sq], dim=1).cpu().tolist()
                results.update(zip(chunk, pairs, strict=True))
    for key in keys:
        error_sq, norm_sq = results[key]
        report.error_sq += error_sq
        report.norm_sq += norm_sq
        report.layer_errors[key] = math.sqrt(error_sq / norm_sq) if norm_sq > 0 else 0.0
    return report


def _check_exportable(entries: Sequence[MixEntry], modules: Mapping[str, LoraModule],
                      names: Mapping[str, str]) -> None:
    unsupported = [e.lora.name for e in entries if e.lora.has_core_adapters and e.weight != 0.0]
    if unsupported:
        raise ExportError(f"{unsupported} carry adapters other than plain LoRA (LoHa/LoKr/DoRA/full diffs), "
                          "which cannot be merged into one LoRA; remove them from the export stack (the mixer "
                          "node can still apply them).")
    unnamed = sorted((key for key in modules if key not in names), key=str)
    slices = [key for key in unnamed if not isinstance(key, str)]
    if slices:
        raise ExportError(f"{len(slices)} mixed layers are slices of fused weights (first: {slices[0]}: core maps "
                          "diffusers' separate q/k/v of FLUX onto its fused qkv), which one kohya module cannot hold; "
                          "export only LoRAs in kohya spelling (lora_unet_double_blocks_…), or apply this stack with "
                          "the LoRA Mixer instead.")
    if unnamed:
        raise ExportError(f"{len(unnamed)} mixed layers have no kohya name in this model's key map (first: "
                          f"{unnamed[0]}); export needs a UNet/CLIP of the LoRAs' base family.")


def build_export(entries: Sequence[MixEntry], weights: Sequence[float], mode: str, rank: int,
                 names: Mapping[str, str], device: torch.device | str | None = None,
                 save_dtype: str = DEFAULT_SAVE_DTYPE) -> ExportResult:
    """Mix ``entries`` with the applied ``weights`` and turn the mix into kohya tensors plus metadata.

    ``names`` maps target weight keys to kohya module names (:func:`kohya_names`). ``mode`` 'concat' is
    exact (rank = Σ rᵢ per layer, ``rank`` ignored; exact to float precision only with ``save_dtype``
    'fp32'); 'svd' truncates every layer to ``rank``. The factors are cast to ``save_dtype`` and the errors
    are measured on the cast factors against equation (1) (:func:`measure_concat`).
    """
    if mode not in MODES:
        raise ExportError(f"export mode {mode!r} is unknown; use one of {MODES}.")
    dtype = save_dtype_of(save_dtype)
    check_entries(entries)
    device = torch.device(device) if device is not None else default_device()
    concat = concat_mix(entries, weights)
    _check_exportable(entries, concat, names)
    # Errors are measured below on the factors as written, so the SVD skips its own measurement.
    modules = reduce_modules(concat, rank, device, measure=False)[0] if mode == "svd" else concat
    out_rank = max(m.rank for m in modules.values())
    modules = cast_modules(uniform_alpha(modules, float(out_rank)), dtype)
    report = measure_concat(entries, weights, modules, device)
    tensors: dict[str, torch.Tensor] = {}
    for key, module in modules.items():
        tensors.update(module_tensors(names[key], module))
    metadata = export_metadata(entries, weights, mode, out_rank, report) | {"lcmpack.save_dtype": save_dtype}
    return ExportResult(tensors=tensors, metadata=metadata, modules=modules, report=report, rank=out_rank)


def export_metadata(entries: Sequence[MixEntry], weights: Sequence[float], mode: str, rank: int,
                    report: ReductionReport) -> dict[str, str]:
    """safetensors header metadata: every value a str, lists and dicts JSON-encoded."""
    sources = [{"name": e.lora.name, "sha256": e.lora.sha256, "content_sha256": e.lora.content_sha256,
                "format": e.lora.format, "kind": e.lora.kind,
                "role": e.role, "weight": e.weight, "applied_weight": w}
               for e, w in zip(entries, weights, strict=True)]
    worst_key, worst = report.worst_layer
    return {
        "lcmpack.version": "1",
        "lcmpack.sources": json.dumps(sources),
        "lcmpack.weights": json.dumps([float(w) for w in weights]),
        "lcmpack.base_family": entries[0].lora.family,
        "lcmpack.accelerator": json.dumps(accelerator_names(entries)),
        "lcmpack.mode": mode,
        "lcmpack.rank": str(rank),
        "lcmpack.error_total": repr(report.total_error),
        "lcmpack.error_max_layer": json.dumps({"key": worst_key, "error": worst}),
        "lcmpack.error_per_layer": json.dumps(report.layer_errors),
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(rank),
        "ss_network_module": "networks.lora",
    }


def export_report(path, mode: str, result: ExportResult, entries: Sequence[MixEntry], weights: Sequence[float]) -> str:
    """The LoRA Export node's report: file written (``path``), mode, dtype, rank, measured error, sources."""
    worst_key, worst = result.report.worst_layer
    sources = [f"{e.lora.name} ({e.role}, {w:g})" for e, w in zip(entries, weights, strict=True)]
    return (f"Exported {path.name} ({mode}, {result.metadata['lcmpack.save_dtype']}, rank {result.rank}, "
            f"{len(result.modules)} layers, {path.stat().st_size / 2**20:.1f} MiB) to {path.parent}\n"
            f"Measured relative error: total {result.report.total_error:.3e}, worst layer {worst:.3e} "
            f"({worst_key})\nSources: {json.dumps(sources)}")
