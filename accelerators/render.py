"""Text generated from the registry: node tooltips, the help pages' tables and docs/accelerators.md's table.

``scripts/build_accelerator_docs.py`` writes the generated blocks into the committed files between
``<!-- registry:NAME -->`` and ``<!-- /registry:NAME -->``; ``tests/test_accel_registry.py`` checks that the
committed files equal what this module generates now.
"""
from __future__ import annotations

import re

from .match import Tokens
from .records import Accelerator, Recipe
from .registry import records

SAMPLER_TITLES = {"lcm": "LCM", "tcd": "TCD", "ddim": "DDIM (η 0)", "euler": "Euler",
                  "euler_ancestral": "Euler ancestral"}
MODEL_SAMPLING_TITLES = {"lcm": "LCM grid + boundary", "tcd": "LCM grid, no boundary", "discrete": "default",
                         "lcm-full": "LCM boundary, full schedule", "x0": "default, x0 prediction"}
FORM_TITLES = {"lora": "LoRA", "motion-module": "motion module", "checkpoint": "checkpoint"}


def _number(value: float) -> str:
    return f"{value:g}"


def timesteps_text(recipe: Recipe) -> str:
    if recipe.schedule == "lcm-grid":
        return "LCM grid (50)"
    if recipe.schedule == "fixed":
        return ", ".join(str(t) for t in recipe.timesteps)
    if not recipe.steps:
        return "trailing at the file's steps"
    return f"trailing, {recipe.steps} step{'s' if recipe.steps > 1 else ''}"


def cfg_text(recipe: Recipe) -> str:
    text = _number(recipe.cfg)
    if recipe.cfg_range and recipe.cfg_range != (recipe.cfg, recipe.cfg):
        text += f" ({_number(recipe.cfg_range[0])}-{_number(recipe.cfg_range[1])})"
    if recipe.guidance is not None:
        text += f", guidance {_number(recipe.guidance)}"
    return text


def sampling_text(recipe: Recipe) -> str:
    """Sampler · timesteps · model sampling, or the core KSampler advice of a family KSampler (LCM) does not drive."""
    if recipe.runs_on in ("core", "flow"):
        where = "core KSampler" if recipe.runs_on == "core" else "KSampler (LCM) or core KSampler"
        parts = [f"{where}: {recipe.scheduler or 'euler'}"]
        if recipe.steps:
            parts.append(f"{recipe.steps} steps")
        if recipe.shift is not None:
            parts.append(f"shift {_number(recipe.shift)}")
        return ", ".join(parts)
    gamma = f" γ {_number(recipe.gamma)}" if recipe.sampler == "tcd" else ""
    betas = f", {recipe.beta_schedule} betas" if recipe.beta_schedule != "model" else ""
    return (f"{SAMPLER_TITLES[recipe.sampler]}{gamma} · {timesteps_text(recipe)} · "
            f"{MODEL_SAMPLING_TITLES[recipe.model_sampling]}{betas}")


def _names_of(record: Accelerator, recipe: Recipe) -> list[str]:
    """The record's published names that select ``recipe`` (a variant's ``when``; the default: the others)."""
    variants = [r.when for r in record.recipes if r.when is not None]
    if recipe.when is not None:
        return [n for n in record.published if recipe.when.matches(Tokens.of(n))]
    return [n for n in record.published if not any(rule.matches(Tokens.of(n)) for rule in variants)]


def _detected_by(record: Accelerator, recipe: Recipe) -> str:
    if recipe.checkpoint:
        return "by name on the KSampler"
    names = ", ".join(f"`{name}`" for name in _names_of(record, recipe)[:2]) or "name"
    extra = " and content" if record.content is not None else ""
    where = "" if record.loadable else (" (detection only)" if record.form == "lora" else
                                        f" ({FORM_TITLES[record.form]})")
    return f"{names}{extra}{where}"


def accelerators_table() -> str:
    """docs/accelerators.md's table: one row per recipe, in registry order (detection order)."""
    rows = ["| preset / recipe | kind · family | detected by | sampling (sampler · timesteps · model sampling) "
            "| cfg | LoRA strength | source (read) |", "|---|---|---|---|---|---|---|"]
    for record in records():
        for recipe in record.recipes:
            source = "; ".join(f"[{s.url.split('/', 3)[-1]}]({s.url}) ({s.date})" for s in record.sources)
            rows.append(f"| `{recipe.name}` | {record.kind} · {', '.join(record.families)} | "
                        f"{_detected_by(record, recipe)} | {sampling_text(recipe)} | {cfg_text(recipe)} | "
                        f"{_number(recipe.strength)} | {source} |")
    return "\n".join(rows)


def notes_list() -> str:
    """Per-kind notes and traps (docs/accelerators.md), one bullet per note or recipe note."""
    lines = []
    for record in records():
        for note in (*record.notes, *(f"`{r.name}`: {r.note}" for r in record.recipes if r.note)):
            lines.append(f"- **{record.title}**: {note}")
    return "\n".join(lines)


def downloads_table() -> str:
    """Every record's download: the name to save it under, its folder, the repository and the file's URL."""
    rows = ["| kind | save as | ComfyUI folder | repository | published file |", "|---|---|---|---|---|"]
    for record in records():
        for download in record.downloads:
            rows.append(f"| {record.kind} | `{download.name}` | `models/{download.directory}` | "
                        f"[{download.repo}](https://huggingface.co/{download.repo}) | "
                        f"[`{download.file}`]({download.url}) |")
    return "\n".join(rows)


def help_presets_table() -> str:
    """The KSampler (LCM) help page's table: every preset the node offers."""
    rows = ["| preset | for | sampler · timesteps · model sampling | cfg |", "|---|---|---|---|"]
    for record in records():
        for recipe in record.presets():
            what = f"{record.title} {FORM_TITLES['checkpoint' if recipe.checkpoint else record.form]}"
            rows.append(f"| {recipe.name} | {what} | {sampling_text(recipe)} | {cfg_text(recipe)} |")
    return "\n".join(rows)


def loader_kinds() -> list[str]:
    """The loader's ``kind`` options after ``auto``: the loadable kinds alphabetically (registry order is detection
    order), then style."""
    return sorted(record.kind for record in records() if record.loadable) + ["style"]


def help_kinds_text() -> str:
    return ("**auto**: from the file's metadata, then its published name, then its content; or the kind by hand ("
            + ", ".join(f"`{kind}`" for kind in loader_kinds()) + ")")


def preset_tooltip() -> str:
    """KSampler (LCM)'s ``preset`` tooltip."""
    checkpoints = [r.name for record in records() for r in record.presets() if r.checkpoint]
    modules = [r.name for record in records() if record.form == "motion-module" for r in record.presets()]
    return ("Accelerator recipe (sampler, timesteps, model sampling, cfg) as its authors' diffusers setup gives it. "
            "auto: the one of the accelerator the pack's loader or mixer applied to this model (none recorded: the "
            "inputs below as they are). custom: the inputs below as they are. Inputs changed from their defaults "
            f"still win. {', '.join(checkpoints)} are for those checkpoints; {', '.join(modules)} for that motion "
            "module (set steps to the file's count). The node's text says what was used and why.")


def kind_tooltip() -> str:
    """LCM-LoRA Loader's ``kind`` tooltip."""
    return ("What the LoRA was distilled for. auto: from its metadata, its published file name, then its content "
            "(the report says which decided). Pick the kind when a renamed accelerator is detected wrongly; "
            "KSampler (LCM) samples by it (docs/accelerators.md).")


BLOCKS = {"accelerators-table": accelerators_table, "accelerators-notes": notes_list,
          "accelerators-downloads": downloads_table, "help-presets": help_presets_table,
          "help-kinds": help_kinds_text}
BLOCK = re.compile(r"(<!-- registry:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(\n?<!-- /registry:(?P=name) -->)", re.S)


def fill_blocks(text: str) -> str:
    """``text`` with every ``<!-- registry:NAME -->`` block replaced by what :data:`BLOCKS` generates now."""
    return BLOCK.sub(lambda m: f"{m[1]}{BLOCKS[m['name']]()}\n<!-- /registry:{m['name']} -->", text)
