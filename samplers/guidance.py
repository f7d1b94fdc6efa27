"""When a sampler needs its negative conditioning: the rule behind KSamplerLCM's lazy ``negative`` input.

Classifier-free guidance mixes the two predictions, x̂ = x̂_u + w·(x̂_c − x̂_u) (Ho & Salimans, arXiv 2207.12598).
At w = 1 this is x̂_c, and ComfyUI's ``comfy.samplers.sampling_function`` (0.3.75 and later) does not even run the
unconditional batch: ``if math.isclose(cond_scale, 1.0) and not model_options["disable_cfg1_optimization"]``
it replaces the negative conditioning by ``None`` before ``calc_cond_batch``. LCM-LoRA (arXiv 2311.05556) has the
guidance distilled into its weights and is sampled at w = 1, so the negative prompt's text encoder need not run.

The negative still matters at w = 1 when something in the model's ``model_options`` reads it or the
unconditional prediction: ``disable_cfg1_optimization`` (set by SAG and the ``*_cfg_pp`` samplers) keeps the
uncond batch; ``sampler_cfg_function`` (PerpNeg, linear CFG), ``sampler_pre_cfg_function`` (APG, FreSca, TCFG),
``sampler_post_cfg_function`` (CFGNorm, CFG-Zero*, Mahiro, epsilon scaling, SLG) and
``sampler_calc_cond_batch_function`` (SLG) are handed the conds or both predictions. These are exactly the keys
``sampling_function`` / ``cfg_function`` consult; with any of them set the negative is requested, even where the
function might ignore it.

The negative also matters, whatever the cfg, when the positive carries something core copies onto every
negative entry before sampling (``comfy.samplers.process_conds`` → ``apply_empty_x_to_equal_area``): a
ControlNet applied by the old ``ControlNetApply`` node (``control_apply_to_uncond``) and a GLIGEN box. Core's own
KSampler always hands it the real negative; with an empty negative list that copy divides by zero
(``integer modulo by zero``, issue 29.4), so the node requests the negative there too.

Pure: no ComfyUI import (the node passes ``model.model_options``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

UNCOND_READING_OPTIONS = (
    "disable_cfg1_optimization",
    "sampler_cfg_function",
    "sampler_pre_cfg_function",
    "sampler_post_cfg_function",
    "sampler_calc_cond_batch_function",
)
"""``model_options`` keys of ``comfy.samplers.sampling_function`` / ``cfg_function`` that see the negative."""


def guidance_is_identity(cfg) -> bool:
    """True where ComfyUI drops the unconditional batch: cfg ≈ 1 with core's own test (``math.isclose``)."""
    return cfg is not None and math.isclose(float(cfg), 1.0)


def uncond_readers(model_options: Mapping | None) -> list[str]:
    """The keys of ``model_options`` that read the negative at cfg 1 (empty lists and False do not count)."""
    options = model_options or {}
    return [key for key in UNCOND_READING_OPTIONS if options.get(key)]


def negative_needed(cfg, model_options: Mapping | None) -> bool:
    """Whether sampling with guidance ``cfg`` on a model with ``model_options`` reads the negative conditioning.

    Unknown ``cfg`` (None) counts as needed: the rule only skips work when it is sure the result is unchanged.
    """
    if not guidance_is_identity(cfg):
        return True
    return bool(uncond_readers(model_options))


UNCOND_COPIED_KEYS = ("control", "gligen")
"""Positive-conditioning entries core copies onto the negative in ``process_conds`` (``apply_empty_x_to_equal_area``
with ``'control'`` for entries marked ``control_apply_to_uncond``, and ``'gligen'`` for every entry)."""


def positive_copies_to_negative(positive) -> list[str]:
    """What in ``positive`` (ComfyUI ``CONDITIONING``: ``[[tensor, options], ...]``) core copies onto the negative:
    ``"control"`` for an entry without ``area`` whose ControlNet is marked ``control_apply_to_uncond`` (the old
    ControlNetApply node), ``"gligen"`` for an entry without ``area`` with a GLIGEN box. Empty when nothing is.
    """
    found = []
    for entry in positive or ():
        options = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 else None
        if not isinstance(options, Mapping) or "area" in options:
            continue
        if options.get("control") is not None and options.get("control_apply_to_uncond", False) is True:
            found.append("control")
        if options.get("gligen") is not None:
            found.append("gligen")
    return sorted(set(found))
