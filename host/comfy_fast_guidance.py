"""The guidance step of the captured loop: x̂₀ of one step as core's ``CFGGuider`` computes it, in one model call.

Core (``comfy/samplers.py`` ``sampling_function`` → ``calc_cond_batch`` → ``cfg_function``; checked on 0.3.75,
0.8.0, 0.33.0):

* cfg 1 (``math.isclose``): the negative is not evaluated; x̂₀ = apply_model(x, σ, cond) -- ``BasicGuider`` and
  ``CFGGuider`` at cfg 1 alike;
* cfg ≠ 1: cond and uncond go through the model as **one batched call** when they concatenate
  (``can_concat_cond``) and fit in free memory (``memory_required(2B) · 1.5 < free``), the uncond first
  (``cond_or_uncond == [1, 0]``, :func:`comfy_cond_batch.plain_batch`); the batch's chunks are the two
  predictions (``out · mult / (1e-37 + mult)`` with ``mult = 1`` for a plain entry: the chunk itself, exactly in
  float32), and x̂₀ = uncond + (cond − uncond) · cfg.

The loop does the same arithmetic on static buffers, so the captured graph gives core's latent (bit-identical with
the eager kernels). Where core would run the two as separate calls (they do not concatenate, or memory is short),
:class:`FastPathUnavailable` says so and core samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import comfy.patcher_extension as extensions
import torch

from ..samplers.fast_path import FastPathUnavailable
from . import contract
from .comfy_cond_batch import plain_batch

WRAPPER_KEY = "lcm_pack.fast_path"


@dataclass(frozen=True)
class Guidance:
    """One step's model call: the conditioning entries in batch order and the guidance scale."""

    order: tuple[int, ...]  # 0 cond, 1 uncond, as core's cond_or_uncond
    uuids: tuple
    cfg: float

    @property
    def key(self) -> tuple:
        """The host-side part of the capture key (the uuids change per call and are not captured values)."""
        return self.order, self.cfg


def guided_conds(guider) -> list:
    """``[positive, negative]`` as core's ``sampling_function`` passes them (negative None at cfg 1)."""
    cfg = float(getattr(guider, "cfg", 1.0))
    return [guider.conds.get("positive"), None if math.isclose(cfg, 1.0) else guider.conds.get("negative")]


def guidance_reason(guider, model_options: dict) -> str | None:
    """Why the step is not one plain batched model call (None: it is)."""
    if plain_batch(guided_conds(guider), model_options) is not None:
        return None
    if not math.isclose(float(getattr(guider, "cfg", 1.0)), 1.0) and not guider.conds.get("negative"):
        return f"cfg={guider.cfg} with no negative conditioning"
    return "the conditioning is not one plain entry each (areas, masks, ControlNet, GLIGEN, hooks, several conds)"


def guidance_inputs(guider, model_options: dict, x: torch.Tensor) -> tuple[Guidance, dict, dict]:
    """(guidance, tensor inputs, constant inputs) of the step's batched model call."""
    entries = plain_batch(guided_conds(guider), model_options)
    if entries is None:
        raise FastPathUnavailable(guidance_reason(guider, model_options))
    batched = contract.batched_cond_inputs([cond for _, cond in entries], x.shape[0])
    if batched is None:
        raise FastPathUnavailable("cond and uncond do not concatenate (core runs them as two model calls)")
    inputs, cond_shapes = batched
    if len(entries) > 1 and not contract.cond_batch_fits(guider.inner_model, x, len(entries), cond_shapes):
        raise FastPathUnavailable("cond and uncond do not fit in free memory as one batch (core runs them as two "
                                  "model calls)")
    tensors = {name: value for name, value in inputs.items() if torch.is_tensor(value)}
    constants = {name: value for name, value in inputs.items() if not torch.is_tensor(value)}
    for name, value in constants.items():
        if not isinstance(value, (int, float, str, bool, type(None), tuple)):
            raise FastPathUnavailable(f"conditioning input {name!r} is a {type(value).__name__}, not a tensor")
    guidance = Guidance(tuple(index for index, _ in entries), tuple(cond["uuid"] for _, cond in entries),
                        float(guider.cfg) if len(entries) > 1 else 1.0)
    return guidance, tensors, constants


def guided_denoiser(base_model, model_options: dict, guidance: Guidance, buffers, names, constants,
                    compile_wrapper):
    """x̂₀(x, σ): ``apply_model`` over the batch (x and σ repeated per entry) with the transformer options core
    builds for it, then the CFG combination of the chunks (module docstring)."""
    chunks = len(guidance.order)

    def denoise(x, sigma):
        options = contract.batch_transformer_options(base_model, model_options, list(guidance.order),
                                                     list(guidance.uuids), sigma)
        if compile_wrapper is not None:
            options = extensions.copy_nested_dicts(options)
            extensions.add_wrapper_with_key(extensions.WrappersMP.APPLY_MODEL, WRAPPER_KEY, compile_wrapper, options)
        inputs = {name.removeprefix("cond."): buffers[name] for name in names}
        out = base_model.apply_model(torch.cat([x] * chunks), torch.cat([sigma] * chunks), **inputs, **constants,
                                     transformer_options=options).to(x.dtype)
        if chunks == 1:
            return out
        uncond, cond = out.chunk(chunks)
        return uncond + (cond - uncond) * guidance.cfg

    return denoise
