"""Shared constants for the pack's nodes."""
from __future__ import annotations

import itertools
import math

NODE_PREFIX = "LCMPack_"
CATEGORY_ROOT = "LCM-LoRA"
CATEGORY_SAMPLING = f"{CATEGORY_ROOT}/sampling"
CATEGORY_LORA = f"{CATEGORY_ROOT}/lora"


def check_model_file(folder: str, input_name: str, value: str | None) -> bool | str:
    """Validation-time check that a file-name input names a file in ``models/<folder>``.

    ComfyUI 0.3.75 checks combo values against their list only for V1-style combos; V3 ``io.Combo`` inputs
    are not checked, so without this a missing LoRA would pass validation and fail mid-run. The message
    has the shape of core's ``value_not_in_list`` error and names the file.
    """
    if value is None:
        return True
    import folder_paths

    names = folder_paths.get_filename_list(folder)
    if value in names:
        return True
    shown = names if len(names) <= 20 else f"(list of length {len(names)})"
    return (f"Value not in list: {input_name}: '{value}' not in {shown}. Put the file into ComfyUI/models/{folder} "
            "(then press r in the frontend to refresh) or pick one of the list.")


def input_problem(spec, value) -> str | None:
    """What is wrong with ``value`` for the schema input ``spec`` (None: fine, or not given / linked).

    Numbers must be finite and inside the input's [min, max] (ComfyUI's own min/max test lets NaN through,
    and it skips every input a node's ``validate_inputs`` names); combo values must be one of the options.
    """
    from comfy_api.latest import io

    if value is None:
        return None
    name, default = spec.id, getattr(spec, "default", None)
    if isinstance(spec, (io.Float.Input, io.Int.Input)):
        bounds = f"[{spec.min}, {spec.max}]"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{name}={value!r} is not a number; give a value in {bounds} (default {default})."
        if not math.isfinite(number):
            return f"{name}={value} is not a finite number; give a value in {bounds} (default {default})."
        if spec.min is not None and value < spec.min:
            return f"{name}={value} is below its minimum {spec.min}; give a value in {bounds} (default {default})."
        if spec.max is not None and value > spec.max:
            return f"{name}={value} is above its maximum {spec.max}; give a value in {bounds} (default {default})."
    elif isinstance(spec, io.Combo.Input) and value not in list(spec.options or []):
        return f"{name}={value!r} is not one of {list(spec.options)}; pick one of them (default {default!r})."
    return None


def check_inputs(node_cls, **values) -> bool | str:
    """Validation-time check of the named inputs against ``node_cls``'s own schema (see :func:`input_problem`).

    For a node's ``validate_inputs``: it receives only the inputs it names, and naming one switches off core's
    min/max/combo checks of it, so every named number and combo is re-checked here. Each failing input is
    listed once, by name and value, in one message (ComfyUI shows the message under each named input).
    """
    specs = {spec.id: spec for spec in node_cls.define_schema().inputs}
    problems = [problem for name, value in values.items() if (problem := input_problem(specs[name], value))]
    return " ".join(problems) if problems else True


def first_failure(*results) -> bool | str:
    """The first validation result that is not True (a message), else True."""
    return next((result for result in results if result is not True), True)


_RUNS = itertools.count()


def run_every_time(cls, **_inputs) -> int:
    """``fingerprint_inputs`` of a node that writes files: a new value on every queue, so ComfyUI's cache never
    serves an old result (a re-queued export would otherwise write nothing and report the old success, and an
    ``overwrite=False`` refusal would pass silently). ``Schema.not_idempotent`` does not do this: it only adds
    the node id to the cache key. Use as ``fingerprint_inputs = classmethod(run_every_time)``."""
    return next(_RUNS)
