"""Node classes of the pack. Each module exports its nodes in a ``NODES`` list; ids start with ``LCMPack_``.

Node ids, input names and their order are a public contract: they are saved inside users' workflows.
Never rename or reorder them; add new inputs at the end, optional.
"""
from __future__ import annotations

from . import distill_nodes, lora_nodes, mix_nodes, realtime_nodes, sampling_nodes

NODE_CLASSES = [
    *sampling_nodes.NODES,
    *lora_nodes.NODES,
    *mix_nodes.NODES,
    *distill_nodes.NODES,
    *realtime_nodes.NODES,
]
