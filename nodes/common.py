"""Shared constants for the pack's nodes."""
from __future__ import annotations

NODE_PREFIX = "LCMPack_"
CATEGORY_ROOT = "LCM-LoRA"
CATEGORY_SAMPLING = f"{CATEGORY_ROOT}/sampling"
CATEGORY_LORA = f"{CATEGORY_ROOT}/lora"
