"""LoRA file layouts: group tensors into modules, resolve alpha, validate (pure torch, no ComfyUI).

Layouts (the up/down suffix pairs are the ones ComfyUI core's ``weight_adapter.LoRAAdapter`` reads):

========================  ==========================================  ==================================
format                    module tensors                              alpha
========================  ==========================================  ==================================
kohya (LDM or diffusers)  ``lora_unet_<name>.lora_up/lora_down.weight``  ``<module>.alpha`` (else = rank)
PEFT / modern diffusers   ``<prefix><name>.lora_B/lora_A.weight``      ``lora_alpha`` / ``alpha_pattern`` of
                          prefixes ``unet.``, ``text_encoder(_2).``,    the diffusers ``lora_adapter_metadata``
                          ``base_model.model.``, none                   or ``adapter_config.json``
legacy diffusers          ``unet.….processor.to_q_lora.up/down.weight`` ``<module>.alpha`` (else = rank)
                          ``….lora.up/down.weight``,
                          ``….lora_linear_layer.up/down.weight``
LoHa / LoKr / DoRA        ``hada_*``, ``lokr_*``, ``dora_scale``         left to ComfyUI core (``extra``)
========================  ==========================================  ==================================

PEFT scaling (``peft.tuners.lora.LoraLayer.update_layer``): ``alpha / r``, or ``alpha / √r`` with
``use_rslora``; stored here as an equivalent ``alpha' = alpha·√r`` so that ``LoraModule.scale = alpha'/r``.
The ``alpha_pattern`` lookup is PEFT's own ``peft.utils.other.get_pattern_key``.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .errors import LoraFormatError, LoraTensorError
from .types import LoraModule

# (up suffix, down suffix, format) in the order core's LoRAAdapter tries them.
LORA_SUFFIXES = (
    (".lora_up.weight", ".lora_down.weight", "kohya"),
    ("_lora.up.weight", "_lora.down.weight", "diffusers-legacy"),
    (".lora_B.weight", ".lora_A.weight", "peft"),
    (".lora.up.weight", ".lora.down.weight", "diffusers-legacy"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", "diffusers-legacy"),
)
PEFT_ADAPTER_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<half>[AB])\.(?P<adapter>[A-Za-z0-9_-]+)\.weight$")
# Tensors of adapters that ComfyUI core applies itself (weight_adapter: LoHa, LoKr, DoRA, LoCon mid, diffs).
CORE_ADAPTER_SUFFIX = re.compile(r"\.(hada_(w1_a|w1_b|w2_a|w2_b|t1|t2)|lokr_(w1|w2|w1_a|w1_b|w2_a|w2_b|t2)|"
                                 r"dora_scale|lora_mid\.weight|diff|diff_b|w_norm|b_norm)$")
PEFT_PREFIXES = ("unet.base_model.model.", "base_model.model.", "unet.", "text_encoder_2.", "text_encoder.")
PEFT_DORA_KEY = "lora_magnitude_vector"
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"


@dataclass
class ParsedModules:
    format: str
    modules: dict[str, LoraModule] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _split_lora_key(key: str) -> tuple[str, str, str] | None:
    """``(module, 'up'|'down', format)`` for a LoRA up/down tensor key, else None."""
    match = PEFT_ADAPTER_KEY.match(key)
    if match:
        return match["module"], "up" if match["half"] == "B" else "down", "peft"
    for up, down, fmt in LORA_SUFFIXES:
        if key.endswith(up):
            return key[: -len(up)], "up", fmt
        if key.endswith(down):
            return key[: -len(down)], "down", fmt
    return None


def peft_component(module: str) -> tuple[str, str]:
    """Split a PEFT/diffusers module name into (component prefix, module name inside that model)."""
    for prefix in PEFT_PREFIXES:
        if module.startswith(prefix):
            return prefix, module[len(prefix):]
    return "", module


def _peft_configs(metadata: dict[str, str], adapter_config_loader: Callable[[], dict | None]) -> dict:
    """LoRA configs by component prefix ("unet.", "text_encoder.", "") from diffusers metadata or the json."""
    configs: dict[str, dict] = {}
    raw = metadata.get(DIFFUSERS_METADATA_KEY)
    if raw:
        try:
            flat = json.loads(raw)
        except ValueError as error:
            raise LoraFormatError(f"metadata '{DIFFUSERS_METADATA_KEY}' is not JSON ({error})") from error
        if not isinstance(flat, dict):
            raise LoraFormatError(f"metadata '{DIFFUSERS_METADATA_KEY}' is JSON {type(flat).__name__}, not an object "
                                  "of LoRA settings: the file's metadata is damaged; remove that entry or use "
                                  "another file.")
        for key, value in flat.items():
            prefix, _, leaf = key.rpartition(".")
            configs.setdefault(f"{prefix}." if prefix else "", {})[leaf] = value
        configs["__source__"] = {"name": f"safetensors metadata '{DIFFUSERS_METADATA_KEY}'"}
        return configs
    config = adapter_config_loader()
    if config:
        configs[""] = config
        configs["__source__"] = {"name": config.get("__file__", "adapter_config.json")}
    return configs


def _peft_alpha(module: str, rank: int, configs: dict) -> float | None:
    """PEFT's effective alpha for ``module`` (alpha·√r under rsLoRA), or None when no config gives one."""
    from peft.utils.other import get_pattern_key

    prefix, inner = peft_component(module)
    component = prefix.replace("base_model.model.", "")
    config = configs.get(component) or configs.get(prefix) or configs.get("")
    if not config or config.get("lora_alpha") is None:
        return None
    pattern = config.get("alpha_pattern") or {}
    try:
        alpha = float(config["lora_alpha"])
        if pattern:
            key = get_pattern_key(dict(pattern).keys(), inner)
            alpha = float(pattern.get(key, alpha))
    except (TypeError, ValueError, OverflowError, re.error) as error:  # re.error: alpha_pattern keys are regexes
        raise LoraFormatError(f"PEFT config ({configs['__source__']['name']}) of module '{module}': lora_alpha "
                              f"{config['lora_alpha']!r} / alpha_pattern {pattern!r} is not a number / a map of "
                              f"regex → number ({error}). Fix the config or use another file.") from error
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)
    return alpha


def _check_finite(name: str, key: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise LoraTensorError(f"LoRA '{name}': tensor '{key}' has {bad} NaN/Inf values; the file is damaged "
                              "(or was saved from a diverged training run). Download it again or use another.")


def _group(tensors: dict[str, torch.Tensor], name: str):
    halves: dict[str, dict[str, torch.Tensor]] = {}
    formats: dict[str, int] = {}
    alphas: dict[str, torch.Tensor] = {}
    extra: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in tensors.items():
        _check_finite(name, key, tensor)
        split = _split_lora_key(key)
        if split:
            module, half, fmt = split
            halves.setdefault(module, {})[half] = (key, tensor)
            formats[fmt] = formats.get(fmt, 0) + 1
        elif key.endswith(".alpha"):
            alphas[key[: -len(".alpha")]] = tensor
        elif CORE_ADAPTER_SUFFIX.search(key):
            extra[key] = tensor
        else:
            unknown.append(key)
    if unknown:
        hint = (" PEFT DoRA ('lora_magnitude_vector') is not supported: convert it to kohya 'dora_scale'."
                if any(PEFT_DORA_KEY in k for k in unknown) else "")
        raise LoraFormatError(f"LoRA '{name}' has {len(unknown)} tensors that are not part of any LoRA layout, e.g. "
                              f"{unknown[:3]}.{hint} Use a kohya, PEFT or diffusers LoRA file.")
    return halves, formats, alphas, extra


def _check_not_empty(name: str, module: str, up: torch.Tensor, down: torch.Tensor) -> None:
    """Refuse rank 0 (or any zero-sized dimension): scale = alpha / rank would divide by zero and up @ down is
    empty, so core's patching and the mixer would fail later with a raw ZeroDivisionError or reshape error."""
    if down.shape[0] == 0 or up.numel() == 0 or down.numel() == 0:
        raise LoraTensorError(f"LoRA '{name}': module '{module}' has rank {down.shape[0]} (up {tuple(up.shape)}, "
                              f"down {tuple(down.shape)}): an empty update with no scale (alpha / rank). The file "
                              "is damaged or was exported wrongly; download it again or use another file.")


def _alpha_for(name: str, module: str, rank: int, alphas: dict, peft_configs: dict, fmt: str) -> tuple[float, str]:
    if module in alphas:
        if alphas[module].numel() != 1:
            raise LoraTensorError(f"LoRA '{name}': module '{module}' has an alpha tensor of shape "
                                  f"{tuple(alphas[module].shape)}; alpha is one number. The file is damaged: "
                                  "download it again or use another file.")
        alpha, source = float(alphas[module].float().reshape(-1)[0]), "alpha tensors"
    elif fmt == "peft" and (peft_alpha := _peft_alpha(module, rank, peft_configs)) is not None:
        alpha, source = peft_alpha, peft_configs["__source__"]["name"]
    else:
        return float(rank), "none found: alpha = rank (scale 1), as ComfyUI core and diffusers assume"
    if not math.isfinite(alpha) or alpha <= 0:
        raise LoraTensorError(f"LoRA '{name}': module '{module}' has alpha {alpha} (from {source}); alpha must be "
                              "> 0 (alpha 0 switches the LoRA off). Fix the file's alpha or use another file.")
    return alpha, source


def parse_modules(tensors: dict[str, torch.Tensor], metadata: dict[str, str], name: str,
                  adapter_config_loader: Callable[[], dict | None] = lambda: None) -> ParsedModules:
    """Group a LoRA state dict into ``LoraModule`` s keyed by the file's module names, with alpha resolved.

    Raises ``LoraFormatError`` for tensors of no known layout and ``LoraTensorError`` for NaN/Inf, a module
    missing its up or down half, an up/down rank mismatch, rank 0, or alpha ≤ 0.
    """
    halves, formats, alphas, extra = _group(tensors, name)
    fmt = max(formats, key=formats.get) if formats else ("lycoris" if extra else "unknown")
    if not halves and not extra:
        raise LoraFormatError(f"LoRA '{name}' holds no LoRA tensors (only {sorted(tensors)[:3]}); it is not a LoRA.")
    peft_configs = _peft_configs(metadata, adapter_config_loader) if "peft" in formats else {}
    parsed = ParsedModules(format=fmt, extra=extra)
    sources: set[str] = set()
    extra_modules = set(module_names({}, extra))
    for module, pair in sorted(halves.items()):
        if set(pair) != {"up", "down"}:
            missing = ({"up", "down"} - set(pair)).pop()
            raise LoraTensorError(f"LoRA '{name}': module '{module}' has no {missing} tensor; the file is "
                                  "incomplete. Download it again.")
        (up_key, up), (down_key, down) = pair["up"], pair["down"]
        if up.ndim < 2 or down.ndim < 2 or up.shape[1] != down.shape[0]:
            raise LoraTensorError(f"LoRA '{name}': module '{module}' has up {tuple(up.shape)} and down "
                                  f"{tuple(down.shape)}: their ranks differ, so up @ down is undefined. The file "
                                  "is damaged or was merged wrongly; use another file.")
        _check_not_empty(name, module, up, down)
        if module in extra_modules:  # DoRA / LoCon-mid: core's adapter needs all tensors together
            extra.update({up_key: up, down_key: down})
            continue
        alpha, source = _alpha_for(name, module, int(down.shape[0]), alphas, peft_configs, fmt)
        sources.add(source)
        parsed.modules[module] = LoraModule(down=down, up=up, alpha=alpha)
    for module, alpha in alphas.items():  # LoHa/LoKr alphas travel with their tensors to core
        if module in extra_modules and module not in parsed.modules:
            _alpha_for(name, module, 1, {module: alpha}, {}, fmt)  # validates alpha > 0
            extra[f"{module}.alpha"] = alpha
    parsed.notes.append(f"format: {fmt}; alpha from: {', '.join(sorted(sources)) or 'n/a'}")
    return parsed



def module_names(modules: dict, extra: dict) -> list[str]:
    """All module names: LoRA modules plus modules whose tensors are left to core (``extra``)."""
    names = dict.fromkeys(modules)
    for key in extra:
        names.setdefault(key.rsplit(".", 2 if key.endswith(".weight") else 1)[0], None)
    return list(names)
