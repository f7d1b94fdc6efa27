"""Two-expert accelerators (Wan 2.2 Lightning: a HIGH file for the high-noise expert model, a LOW file for the
low-noise one; lightx2v/Wan2.2-Lightning card): which expert a file goes on, and the refusal of a pair mixed up
(pure: the registry's recipes say it, ``accelerators.records.Recipe.expert``).

A file's expert is the ``expert`` of the recipe its name selects (``accelerators.recipe_for``: the ``when`` rule,
``=high`` / ``=low``). The two experts have one architecture (ComfyUI loads both as ``WAN21_T2V``), so a model
tells its expert only by the file it was loaded from (``wan2.2_t2v_high_noise_14B_fp16.safetensors``): the same
``when`` rules read that name, where ComfyUI records it (``host.contract.model_file_name``: 0.33), else the report
says which model the file must go on.
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import accelerators
from ..accelerators import Tokens
from .errors import LoraExpertMismatch


def expert_of(kind: str, name: str) -> str:
    """The expert the file ``name`` of ``kind`` goes on ("" when the kind has no experts or the name says none)."""
    recipe = accelerators.recipe_for(kind, name)
    return recipe.expert if recipe is not None else ""


def model_expert(kind: str, model_file: str | None) -> str:
    """The expert of ``kind`` that a model's file name names ("" when none or the name is unknown)."""
    record = accelerators.get(kind)
    if record is None or not model_file:
        return ""
    tokens = Tokens.of(model_file)
    named = {r.expert for r in record.recipes if r.expert and r.when is not None and r.when.matches(tokens)}
    return named.pop() if len(named) == 1 else ""


def _pair_message(first: tuple[str, str], second: tuple[str, str], title: str) -> str:
    (name_a, expert_a), (name_b, expert_b) = first, second
    return (f"'{name_a}' goes on the {expert_a} expert and '{name_b}' on the {expert_b} expert: a {title} pair is "
            "two files for two models, never both on one. Load each with its own loader on its own expert model. "
            "Nothing was patched.")


def check_experts(stack: Sequence[tuple[str, str]], applied: Sequence[dict], model_file: str | None) -> list[str]:
    """Refuse a pair mixed up (``LoraExpertMismatch`` naming which file goes on which expert) and return the report
    lines of the files that have an expert. ``stack``: (name, kind) of the request; ``applied``: the model's record
    (``lora.applied.applied_loras``); ``model_file``: the model's file name, None when ComfyUI does not record it."""
    lines = []
    for name, kind in stack:
        expert = expert_of(kind, name)
        if not expert:
            continue
        title = accelerators.get(kind).title
        others = [(n, expert_of(kind, n)) for n, k in stack if k == kind and n != name]
        others += [(entry["name"], expert_of(kind, entry["name"])) for entry in applied if entry.get("kind") == kind]
        other = next(((n, e) for n, e in others if e and e != expert), None)
        if other is not None:
            raise LoraExpertMismatch(_pair_message((name, expert), other, title))
        on_model = model_expert(kind, model_file)
        if on_model and on_model != expert:
            raise LoraExpertMismatch(
                f"'{name}' is the {expert} file of {title}, but the model '{model_file}' is the {on_model} expert: "
                f"load '{name}' on the {expert} expert model and the {on_model} file on this one (the card's "
                "pairing; swapped, each expert denoises with the other's LoRA). Nothing was patched.")
        where = (f"the model '{model_file}' is that expert" if on_model else
                 f"the model's file name does not say which expert it is: make sure it is the {expert} model"
                 if model_file else
                 f"this ComfyUI does not record the model's file: make sure it is the {expert} model")
        lines.append(f"Expert: '{name}' goes on the {expert} expert ({title} card); {where}.")
    return lines
