"""What this pack applied to a model, and the one "already applied" policy (pure dict functions).

The record lives in ``ModelPatcher.model_options``: ``clone()`` deep-copies it, so it travels with every clone
down a graph. Every apply (the loader's stack of one, the mixer's stack) records its LoRAs
(:func:`record_applied`) and checks a new stack against the record and against itself
(:func:`check_not_applied`) before anything is patched.
"""
from __future__ import annotations

from collections.abc import Sequence

from .errors import LoraAlreadyApplied, LoraAppliedTwice
from .mix import ROLE_ACCELERATOR

PACK_OPTIONS_KEY = "lcm_lora_pack"


def applied_loras(model_options: dict) -> list[dict]:
    """Entries ``{"name", "sha256", "content_sha256", "kind", "family", "strength", "largest"}``, oldest first.

    ``sha256`` is the file hash (``LoraFile.sha256``); ``content_sha256`` the tensor hash
    (``LoraFile.content_sha256``, may be empty), which also recognises a re-saved copy of the same LoRA.
    ``largest``: ``{"module", "alpha", "rank"}`` of the file's largest scale alpha/rank (None: no modules), recorded
    at apply time so that a NaN during sampling can name the LoRA and its alpha from the model alone.
    """
    return list(model_options.get(PACK_OPTIONS_KEY, {}).get("applied", []))


def largest_scale(modules: dict) -> dict | None:
    """``{"module", "alpha", "rank"}`` of the module with the largest ``|alpha / rank|`` (None: no modules)."""
    if not modules:
        return None
    module, largest = max(modules.items(), key=lambda item: abs(item[1].scale))
    name = module if isinstance(module, str) else module[0]  # core's (key, slice) target of a fused weight
    return {"module": name, "alpha": float(largest.alpha), "rank": int(largest.rank)}


def record_applied(model_options: dict, name: str, sha256: str, kind: str, family: str, strength: float,
                   content_sha256: str = "", largest: dict | None = None) -> None:
    """Append an entry to the (already cloned) model's record."""
    pack = model_options.setdefault(PACK_OPTIONS_KEY, {})
    pack["applied"] = applied_loras(model_options) + [
        {"name": name, "sha256": sha256, "content_sha256": content_sha256, "kind": kind, "family": family,
         "strength": float(strength), "largest": largest}]


def _digests(lora) -> set[str]:
    return {d for d in (lora.sha256, lora.content_sha256) if d}


def find_same_file(model_options: dict, *digests: str) -> dict | None:
    """The entry whose file or content hash is one of ``digests``, if the pack already applied that LoRA."""
    wanted = {d for d in digests if d}
    return next((e for e in applied_loras(model_options)
                 if wanted & {e.get("sha256", ""), e.get("content_sha256", "")}), None)


def find_acceleration(model_options: dict) -> dict | None:
    """The first acceleration LoRA (any kind but "style") the pack already applied, if any."""
    return next((e for e in applied_loras(model_options) if e["kind"] != "style"), None)


def is_acceleration(kind: str, role: str) -> bool:
    """An entry accelerates when its file is of an acceleration kind or the stack marks it as accelerator."""
    return kind != "style" or role == ROLE_ACCELERATOR


def _check_stack_unique(stack: Sequence[tuple[object, str]]) -> None:
    """Refuse a LoRA that appears twice in one stack: same file, a byte-identical copy or the same tensors
    re-saved, whatever the roles (issue 18, bug 3: it would be applied at twice its weight and exported at
    twice its rank)."""
    for later, (lora, role) in enumerate(stack):
        for earlier, (other, other_role) in enumerate(stack[:later]):
            if _digests(lora) & _digests(other):
                how = "the same file" if lora.sha256 == other.sha256 else "the same tensors"
                raise LoraAppliedTwice(
                    f"the stack holds one LoRA twice: entry {earlier + 1} '{other.name}' ({other_role}) and entry "
                    f"{later + 1} '{lora.name}' ({role}) are {how} (sha256 {other.sha256[:12]}). It would be "
                    "applied at twice its weight (and exported at twice its rank). Remove one of the two LoRA "
                    "Stack nodes, or give the one entry the weight you want. Nothing was patched.")


def check_not_applied(model_options: dict, stack: Sequence[tuple[object, str]]) -> dict | None:
    """The one "already applied" policy, checked before anything is patched. ``stack``: (LoRA, role) pairs.

    * A LoRA twice in the stack (file hash or tensor hash) is refused: :class:`LoraAppliedTwice`.
    * A LoRA the model already carries (same file or same tensors, any name): when it is the whole request (a
      stack of one: the loader) nothing is applied again and its record entry is returned, so the caller
      reports it and hands the model on unchanged (Fooocus-API #159); inside a larger stack the mix cannot be
      what was asked and it is refused (:class:`LoraAlreadyApplied`).
    * An acceleration entry (:func:`is_acceleration`) on a model that already carries an acceleration LoRA is
      refused: two acceleration LoRAs over-bake the image. Style LoRAs may go on top.
    """
    _check_stack_unique(stack)
    for lora, role in stack:
        same = find_same_file(model_options, *_digests(lora))
        if same is not None and len(stack) == 1:
            return same
        if same is not None:
            raise LoraAlreadyApplied(f"'{lora.name}' is already applied to this model (as '{same['name']}', "
                                     f"strength {same['strength']}); remove it from the stack or the earlier "
                                     "loader so it is not applied twice. Nothing was patched.")
        previous = find_acceleration(model_options)
        if previous is not None and is_acceleration(lora.kind, role):
            raise LoraAlreadyApplied(
                f"LoRA '{lora.name}' ({lora.kind}) would stack on '{previous['name']}' ({previous['kind']}), an "
                "acceleration LoRA this model already carries: two acceleration LoRAs over-bake the image. Remove "
                "one of the loaders, or mix them on purpose from the base model with the LoRA Mixer. Nothing was "
                "patched.")
    return None
