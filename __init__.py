"""LCM-LoRA Pack for ComfyUI: exact LCM/TCD sampling, a safe LCM-LoRA loader, LoRA mixing and export.

ComfyUI imports this folder from ``custom_nodes/`` and calls :func:`comfy_entrypoint` (V3 registration
only; the pack defines no ``NODE_CLASS_MAPPINGS``). Inside the pack all imports are relative.

Outside ComfyUI (tests, scripts, bench) the same folder is imported as the package ``lcm_lora_pack``
through ``.pack/lcm_lora_pack`` (a link to this folder made by ``scripts/provision.py``). Importing the
package imports nothing from ComfyUI: the node modules are loaded only when ComfyUI asks for the extension.
"""
from __future__ import annotations

# Served by ComfyUI at /extensions/<this folder>/ (nodes.py reads WEB_DIRECTORY for V1 and V3 packs alike); the
# frontend's node help panel fetches docs/<node id>.md from there.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """V3 entry point: the extension that registers every node of the pack (ids prefixed ``LCMPack_``)."""
    from comfy_api.latest import ComfyExtension

    from .nodes import NODE_CLASSES

    class LCMLoraPackExtension(ComfyExtension):
        """Registers every node of the pack."""

        async def get_node_list(self):
            return list(NODE_CLASSES)

    return LCMLoraPackExtension()
