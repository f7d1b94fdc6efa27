"""Every node of the pack has a help page that ComfyUI serves where its frontend's help panel looks for it.

The frontend (``NodeHelpService``) fetches ``/extensions/<custom node folder>/docs/<node id>.md`` for custom nodes;
ComfyUI serves a pack's ``WEB_DIRECTORY`` under ``/extensions/<folder>/`` (``nodes.py`` / ``server.py``, 0.3.75
and 0.8.0 alike). The browser test opens one in the real help panel.
"""
from __future__ import annotations

import urllib.request

import pytest

PACK_FOLDER = "lcm-lora-pack"

pytestmark = pytest.mark.server


def test_every_pack_node_has_a_served_help_page(comfy_server, comfy):
    info = comfy_server.get_json("/object_info")
    for node_id in comfy.pack_node_ids():
        with urllib.request.urlopen(f"{comfy_server.url}/extensions/{PACK_FOLDER}/docs/{node_id}.md") as response:
            text = response.read().decode()
        assert text.startswith(f"# {info[node_id]['display_name']}\n"), (node_id, text[:80])
        assert "*LCM-LoRA Pack help*" in text and "## " in text
