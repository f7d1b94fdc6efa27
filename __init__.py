"""LCM-LoRA Pack for ComfyUI: exact LCM/TCD sampling, a safe LCM-LoRA loader, LoRA mixing and export.

ComfyUI imports this folder from ``custom_nodes/`` and calls :func:`comfy_entrypoint` (V3 registration
only; the pack defines no ``NODE_CLASS_MAPPINGS``). Inside the pack all imports are relative.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .nodes import NODE_CLASSES


class LCMLoraPackExtension(ComfyExtension):
    """Registers every node of the pack (ids prefixed ``LCMPack_``)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)


async def comfy_entrypoint() -> LCMLoraPackExtension:
    return LCMLoraPackExtension()
