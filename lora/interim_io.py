"""Stand-in for ``lora.io`` (built on branch wt-lora) so the mix nodes run before it is merged.

Reads kohya ``.lora_down/.lora_up/.alpha`` safetensors only (no pickles) and resolves module names through a
ComfyUI key map. To be deleted once ``lora.io.read_lora_file`` / ``resolve_targets`` are merged.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load_file

from .types import LoraFile, LoraModule

_DOWN, _UP, _ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _family(modules: Mapping[str, LoraModule]) -> str:
    """Base family from the cross-attention key width (768: SD1.5, 2048: SDXL)."""
    for name, module in modules.items():
        if "attn2" in name and ("to_k" in name or "to_v" in name):
            width = module.down.shape[1]
            return {768: "sd15", 2048: "sdxl"}.get(int(width), f"unknown-{width}")
    return "unknown"


def read_lora_file(path: Path | str) -> LoraFile:
    path = Path(path)
    tensors = load_file(str(path))
    modules: dict[str, LoraModule] = {}
    for key, down in tensors.items():
        if not key.endswith(_DOWN):
            continue
        name = key[: -len(_DOWN)]
        up = tensors[name + _UP]
        alpha = float(tensors[name + _ALPHA].item()) if name + _ALPHA in tensors else float(down.shape[0])
        modules[name] = LoraModule(down=down, up=up, alpha=alpha)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    title = (metadata.get("modelspec.title", "") + metadata.get("ss_output_name", "") + path.name).lower()
    kind = "lcm" if "lcm" in title else "style"
    return LoraFile(name=path.name, sha256=_sha256(path), format="kohya", family=_family(modules), kind=kind,
                    modules=modules, metadata=metadata)


def resolve_targets(lora_file: LoraFile, key_map: Mapping[str, object]) -> tuple[LoraFile, list[str]]:
    """(copy keyed by target weight key, module names the key map does not know)."""
    resolved, missing = {}, []
    for name, module in lora_file.modules.items():
        target = key_map.get(name)
        if isinstance(target, str):
            resolved[target] = module
        else:
            missing.append(name)
    return LoraFile(name=lora_file.name, sha256=lora_file.sha256, format=lora_file.format,
                    family=lora_file.family, kind=lora_file.kind, modules=resolved, extra=lora_file.extra,
                    metadata=lora_file.metadata), missing
