"""The one validating reader of a LoRA file's metadata (pure: no torch, no ComfyUI).

A file's header is written by whoever made the file, so every field the pack reads is checked here before
use: wrong types and malformed JSON are ignored with a report line (never an exception), every field is cut to
:data:`FIELD_LIMIT` characters and all fields together to :data:`TOTAL_LIMIT`, and the pack's own kind field is
matched case-insensitively against the kinds the pack knows (an unknown kind is ignored, so detection falls
back to the file name and content).

Fields read (the writers are ``lora/export.py`` and ``distill/output.py``):

* ``lcmpack.kind``: a kind name (``lcm``, ``tcd``, …, or ``style``);
* ``lcmpack.sources``: JSON list of objects ``{"name", "kind", "weight", "applied_weight", …}`` (an exported
  mix); the mix is an accelerator when exactly one accelerator kind has a non-zero weight;
* the descriptive text fields (``modelspec.title`` / ``description`` / ``tags``, ``ss_output_name``,
  ``ss_training_comment``, ``name``, ``description``) and ``lora_adapter_metadata`` (PEFT settings) pass through
  as bounded strings for their readers (kind detection, ``formats``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

FIELD_LIMIT = 256 * 1024       # characters of one field the pack keeps (PEFT configs of big LoRAs: tens of KiB)
TOTAL_LIMIT = 1024 * 1024      # characters of all fields together
MAX_SOURCES = 256              # entries of lcmpack.sources looked at
SHOWN = 40                     # characters of a bad value quoted in a report line

KIND_KEY = "lcmpack.kind"
SOURCES_KEY = "lcmpack.sources"


@dataclass
class PackMetadata:
    """What the pack's own fields say, validated; ``notes`` are report lines about what was ignored."""

    kind: str | None = None                 # lcmpack.kind, lower case, known
    sources_kind: str | None = None         # the single accelerator of an exported mix
    notes: list[str] = field(default_factory=list)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:SHOWN] + ("…" if len(text) > SHOWN else ""))


def bounded_fields(metadata: Mapping | None) -> tuple[dict[str, str], list[str]]:
    """``metadata`` with str keys and values only, each value cut to :data:`FIELD_LIMIT` characters, at most
    :data:`TOTAL_LIMIT` characters in all (later fields dropped); report lines for what was changed."""
    kept: dict[str, str] = {}
    notes: list[str] = []
    if not isinstance(metadata, Mapping):
        if metadata is not None:
            notes.append(f"metadata: ignored (a {type(metadata).__name__}, not a table of text fields)")
        return kept, notes
    total, wrong, cut, dropped = 0, [], [], []
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            wrong.append(_shown(key))
            continue
        if len(key) > FIELD_LIMIT or total >= TOTAL_LIMIT:
            dropped.append(_shown(key))
            continue
        if len(value) > FIELD_LIMIT:
            value = value[:FIELD_LIMIT]
            cut.append(_shown(key))
        value = value[:TOTAL_LIMIT - total]
        total += len(value) + len(key)
        kept[key] = value
    if wrong:
        notes.append(f"metadata: {len(wrong)} field(s) that are not text ignored ({', '.join(wrong[:3])})")
    if cut:
        notes.append(f"metadata: {len(cut)} field(s) longer than {FIELD_LIMIT} characters cut ({', '.join(cut[:3])})")
    if dropped:
        notes.append(f"metadata: {len(dropped)} field(s) beyond {TOTAL_LIMIT} characters in all ignored "
                     f"({', '.join(dropped[:3])})")
    return kept, notes


def _kind(value: object, is_kind: Callable[[str], bool]) -> tuple[str | None, str | None]:
    """``(kind, note)``: a known kind (case-insensitive) or a report line."""
    if not isinstance(value, str):
        return None, f"metadata {KIND_KEY}: ignored (a {type(value).__name__}, not a kind name)"
    name = value.strip().lower()
    if not name:
        return None, None
    if len(name) > 64 or not is_kind(name):
        return None, (f"metadata {KIND_KEY} {_shown(value.strip())} is not a kind the pack knows: ignored (kind "
                      "decided by the file name and content)")
    return name, None


def _weight(entry: dict) -> float | None:
    """The applied (else the given) weight of a source entry; None when it is not a finite number."""
    value = entry.get("applied_weight", entry.get("weight", 0.0))
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _sources_kind(raw: object, is_kind: Callable[[str], bool]) -> tuple[str | None, list[str]]:
    """The single accelerator kind with a non-zero weight among an exported mix's sources, with report lines."""
    if not isinstance(raw, str):
        return None, [f"metadata {SOURCES_KEY}: ignored (a {type(raw).__name__}, not JSON text)"]
    try:
        sources = json.loads(raw)
    except (ValueError, RecursionError):
        return None, [f"metadata {SOURCES_KEY}: ignored (not valid JSON: {_shown(raw)})"]
    if not isinstance(sources, list):
        return None, [f"metadata {SOURCES_KEY}: ignored (JSON {type(sources).__name__}, not a list of sources)"]
    found, bad = set(), 0
    for entry in sources[:MAX_SOURCES]:
        if not isinstance(entry, dict):
            bad += 1
            continue
        kind, weight = entry.get("kind"), _weight(entry)
        if not isinstance(kind, str) or weight is None:
            bad += 1
            continue
        kind = kind.strip().lower()
        if is_kind(kind) and weight != 0.0:
            found.add(kind)
    notes = [f"metadata {SOURCES_KEY}: {bad} malformed source entr{'y' if bad == 1 else 'ies'} ignored"] if bad else []
    return (found.pop() if len(found) == 1 else None), notes


def read_pack_metadata(metadata: Mapping | None, is_accelerator: Callable[[str], bool],
                       style: str = "style") -> PackMetadata:
    """The pack's own fields of ``metadata``, validated; ``is_accelerator(name)`` says whether a lower-case name
    is an accelerator kind the pack knows (``style`` is the one other kind). Never raises for any content."""
    fields, _ = bounded_fields(metadata)
    result = PackMetadata()
    if KIND_KEY in fields:
        result.kind, note = _kind(fields[KIND_KEY], lambda name: name == style or is_accelerator(name))
        result.notes += [note] if note else []
    elif isinstance(metadata, Mapping) and KIND_KEY in metadata:
        result.notes.append(f"metadata {KIND_KEY}: ignored (a {type(metadata[KIND_KEY]).__name__}, not a kind name)")
    if SOURCES_KEY in fields:
        result.sources_kind, notes = _sources_kind(fields[SOURCES_KEY], is_accelerator)
        result.notes += notes
    return result
