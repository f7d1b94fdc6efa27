"""What this pack applied to a model: a record in ``ModelPatcher.model_options`` (pure dict functions).

``ModelPatcher.clone()`` deep-copies ``model_options``, so the record travels with every clone down a
graph. The loader uses it so that an LCM-LoRA is not applied twice (Fooocus-API #159); mixing nodes record
their LoRAs the same way (:func:`record_applied`).
"""
from __future__ import annotations

PACK_OPTIONS_KEY = "lcm_lora_pack"


def applied_loras(model_options: dict) -> list[dict]:
    """Entries ``{"name", "sha256", "content_sha256", "kind", "family", "strength"}``, oldest first.

    ``sha256`` is the file hash (``LoraFile.sha256``); ``content_sha256`` the tensor hash
    (``LoraFile.content_sha256``, may be empty), which also recognises a re-saved copy of the same LoRA.
    """
    return list(model_options.get(PACK_OPTIONS_KEY, {}).get("applied", []))


def record_applied(model_options: dict, name: str, sha256: str, kind: str, family: str, strength: float,
                   content_sha256: str = "") -> None:
    """Append an entry to the (already cloned) model's record."""
    pack = model_options.setdefault(PACK_OPTIONS_KEY, {})
    pack["applied"] = applied_loras(model_options) + [
        {"name": name, "sha256": sha256, "content_sha256": content_sha256, "kind": kind, "family": family,
         "strength": float(strength)}]


def find_same_file(model_options: dict, *digests: str) -> dict | None:
    """The entry whose file or content hash is one of ``digests``, if the pack already applied that LoRA."""
    wanted = {d for d in digests if d}
    return next((e for e in applied_loras(model_options)
                 if wanted & {e.get("sha256", ""), e.get("content_sha256", "")}), None)


def find_acceleration(model_options: dict) -> dict | None:
    """The first acceleration LoRA (any kind but "style") the pack already applied, if any."""
    return next((e for e in applied_loras(model_options) if e["kind"] != "style"), None)
