"""ComfyUI booted in the benchmark process (CPU or CUDA) with the pack registered, and node calls.

The boot is the repository's one ComfyUI host (:func:`lcm_lora_pack.devkit.host.boot`: base directory with
``custom_nodes/lcm-lora-pack`` linked, boot order); this module adds the benchmark's node calls. The bench
needs only the repository, a ComfyUI tree and torch: on a bare GPU box, from the repository root::

    python3 scripts/provision.py --import-link      # makes .pack/lcm_lora_pack (standard library only)
    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=.pack python -m lcm_lora_pack.bench.lcm_bench --device cuda

Nodes are called the way the executor calls them (V3 ``execute`` classmethod, V1 ``FUNCTION``), with
defaults filled from the node's own ``INPUT_TYPES`` so the benchmark survives optional inputs added later.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lcm_lora_pack.devkit import host as comfy_host

REPO = comfy_host.REPO
LOG = logging.getLogger(__name__)


class NodeMissing(RuntimeError):
    """A node the benchmark wants is not registered (its branch is not merged yet)."""


@dataclass
class BenchHost:
    """The booted ComfyUI: its ``nodes`` module, base directory and torch device."""

    nodes: object
    base: Path
    device: str
    instances: dict = field(default_factory=dict)

    @property
    def loras_dir(self) -> Path:
        return self.base / "models" / "loras"

    def has(self, node_id: str) -> bool:
        return node_id in self.nodes.NODE_CLASS_MAPPINGS

    def require(self, *node_ids: str) -> None:
        missing = [n for n in node_ids if not self.has(n)]
        if missing:
            raise NodeMissing(f"node(s) {', '.join(missing)} not registered (branch not merged?): skipped")

    def inputs_of(self, node_id: str) -> dict[str, tuple]:
        cls = self.nodes.NODE_CLASS_MAPPINGS[node_id]
        spec = cls.INPUT_TYPES()
        out = {}
        for section in ("required", "optional"):
            for name, entry in (spec.get(section) or {}).items():
                out[name] = (section, entry)
        return out

    def call(self, node_id: str, **provided):
        """Run ``node_id`` with ``provided`` inputs; missing ones take the node's default.

        A provided name the node does not declare raises (a renamed input must not silently fall back to a
        default); so does a required input without default that is not provided.
        """
        kwargs = self._kwargs(node_id, provided)
        cls = self.nodes.NODE_CLASS_MAPPINGS[node_id]
        if hasattr(cls, "GET_SCHEMA"):
            result = cls.execute(**kwargs)
            return tuple(result.result) if result.result is not None else ()
        # One instance per node id, as the executor keeps them (core LoraLoader caches its file there).
        instance = self.instances.setdefault(node_id, cls())
        return getattr(instance, cls.FUNCTION)(**kwargs)

    def lazy_requests(self, node_id: str, **provided) -> list[str]:
        """The inputs ``node_id`` asks the executor to evaluate before it runs, as ComfyUI asks it: its
        ``check_lazy_status`` with the evaluated inputs and None for each lazy one not evaluated yet.

        A node without ``check_lazy_status`` gets nothing requested (the executor does not ask it either).
        """
        kwargs = self._kwargs(node_id, provided)
        cls = self.nodes.NODE_CLASS_MAPPINGS[node_id]
        if hasattr(cls, "GET_SCHEMA"):
            from comfy_api.internal import first_real_override  # the executor's own test for an override

            if first_real_override(cls, "check_lazy_status") is None:
                return []
            return list(cls.check_lazy_status(**kwargs) or [])
        instance = self.instances.setdefault(node_id, cls())
        check = getattr(instance, "check_lazy_status", None)
        return list(check(**kwargs) or []) if check else []

    def _kwargs(self, node_id: str, provided: dict) -> dict:
        """``provided`` completed with the node's defaults; unknown names and missing required inputs raise."""
        self.require(node_id)
        declared = self.inputs_of(node_id)
        unknown = sorted(set(provided) - set(declared))
        if unknown:
            raise TypeError(f"{node_id} has no input(s) {unknown}; it declares {sorted(declared)}")
        kwargs = {}
        for name, (section, entry) in declared.items():
            if name in provided:
                kwargs[name] = provided[name]
                continue
            default = _default_of(entry)
            if default is not _NO_DEFAULT:
                kwargs[name] = default
            elif section == "required":
                raise TypeError(f"{node_id}: required input {name!r} not provided and has no default")
        return kwargs


_NO_DEFAULT = object()


def _default_of(entry: tuple):
    """Default of an ``INPUT_TYPES`` entry: its ``default`` option, else the first combo choice."""
    kind = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(kind, (list, tuple)) and kind:
        return kind[0]
    if kind == "COMBO" and options.get("options"):
        return options["options"][0]
    return _NO_DEFAULT


_HOST: BenchHost | None = None


def boot(device: str, base: Path | None = None) -> BenchHost:
    """Boot ComfyUI once in this process on ``device`` ("cpu" or "cuda"), pack registered, progress bars off."""
    global _HOST
    if _HOST is None:
        booted = comfy_host.boot(base, device=device, progress_bars=False)
        _HOST = BenchHost(nodes=booted.nodes, base=booted.base, device=device)
    return _HOST
