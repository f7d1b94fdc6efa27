"""The accelerator registry: one record per kind (pure data; no torch, no ComfyUI). ``lora/`` and ``samplers/``
both import it and never each other (docs/architecture.md)."""
from .match import FIELD_LIMIT, NameRule, Tokens, rules
from .records import Accelerator, ContentSignature, Download, Recipe, Source
from .registry import (
    ACCELERATORS,
    all_kinds,
    detect_name,
    get,
    loadable_kinds,
    recipe_for,
    recipe_kind,
    recipes,
    records,
    steps_from_name,
)

__all__ = ["ACCELERATORS", "FIELD_LIMIT", "Accelerator", "ContentSignature", "Download", "NameRule", "Recipe",
           "Source", "Tokens", "all_kinds", "rules", "detect_name", "get", "loadable_kinds", "recipe_for", "recipe_kind",
           "recipes", "records", "steps_from_name"]
