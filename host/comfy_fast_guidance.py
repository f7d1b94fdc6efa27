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

A ControlNet (core's ``ControlNet``, one, shared by cond and uncond as ``ControlNetApply*`` sets it) runs inside
the loop as core runs it in ``get_control``: its forward on the same batch and its ``control_merge`` (strength)
at every step σ_i inside its start/end range -- the range decided on the host from the sigma list (a capture
cannot read σ), the hint built before the replay into a static buffer (``contract.control_hint``), so a new
hint image replays the same graph.

The loop does the same arithmetic on static buffers, so the captured graph gives core's latent (bit-identical with
the eager kernels). Where core would run the two as separate calls (they do not concatenate, or memory is short),
:class:`FastPathUnavailable` says so and core samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import comfy.patcher_extension as extensions
import torch

from ..samplers.fast_path import FastPathUnavailable, pointer_token, tensor_slots
from . import contract
from .comfy_cond_batch import plain_batch

WRAPPER_KEY = "lcm_pack.fast_path"


@dataclass(frozen=True)
class Guidance:
    """One step's model call: the conditioning entries in batch order and the guidance scale."""

    order: tuple[int, ...]  # 0 cond, 1 uncond, as core's cond_or_uncond
    uuids: tuple
    cfg: float
    control: object = None  # core's ControlNet shared by the entries, or None
    active: tuple[bool, ...] = ()  # the steps the ControlNet applies at (its start/end range)

    @property
    def key(self) -> tuple:
        """The host-side part of the capture key (the uuids change per call and are not captured values): the
        order, the cfg, and a ControlNet's steps, strength and dtype (baked into the graph) and weights' addresses."""
        if self.control is None:
            return self.order, self.cfg
        control = self.control
        weights = pointer_token(tensor_slots(control.control_model))
        return (self.order, self.cfg, self.active, float(control.strength), str(getattr(control, "strength_type", "")),
                bool(getattr(control, "global_average_pooling", False)), str(contract.control_dtype(control)),
                id(control.control_model), weights)


def guided_conds(guider) -> list:
    """``[positive, negative]`` as core's ``sampling_function`` passes them (negative None at cfg 1)."""
    cfg = float(getattr(guider, "cfg", 1.0))
    return [guider.conds.get("positive"), None if math.isclose(cfg, 1.0) else guider.conds.get("negative")]


def _control(entries: list) -> object:
    return entries[0][1].get("control")


def guidance_reason(guider, model_options: dict) -> str | None:
    """Why the step is not one plain batched model call, with at most core's ControlNet (None: it is)."""
    return _reason(guider, plain_batch(guided_conds(guider), model_options, control=True))


def _reason(guider, entries: list | None) -> str | None:
    """:func:`guidance_reason` given the step's ``plain_batch`` entries."""
    if entries is not None:
        return None if _control(entries) is None else contract.fast_control_mismatch(_control(entries))
    if not math.isclose(float(getattr(guider, "cfg", 1.0)), 1.0) and not guider.conds.get("negative"):
        return f"cfg={guider.cfg} with no negative conditioning"
    return ("the conditioning is not one plain entry each (areas, masks, strengths, GLIGEN, hooks, several conds, "
            "different controls on cond and uncond)")


def guidance_inputs(guider, model_options: dict, x: torch.Tensor, sigmas: list[float]) -> tuple[Guidance, dict, dict]:
    """(guidance, tensor inputs, constant inputs) of the step's batched model call; a ControlNet's hint is the
    tensor input ``control.hint``."""
    entries = plain_batch(guided_conds(guider), model_options, control=True)
    reason = _reason(guider, entries)
    if entries is None or reason is not None:
        raise FastPathUnavailable(reason or "the conditioning is not one plain entry each")
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
    control, active = _control(entries), ()
    if control is not None:
        tensors["control.hint"] = contract.control_hint(control, torch.cat([x] * len(entries)), len(entries))
        active = tuple(contract.control_step_active(control, sigma) for sigma in sigmas[:-1])
    guidance = Guidance(tuple(index for index, _ in entries), tuple(cond["uuid"] for _, cond in entries),
                        float(guider.cfg) if len(entries) > 1 else 1.0, control, active)
    return guidance, tensors, constants


def guided_denoiser(base_model, model_options: dict, guidance: Guidance, buffers, names, constants,
                    compile_wrapper, steps: int):
    """x̂₀(x, σ): ``apply_model`` over the batch (x and σ repeated per entry) with the transformer options core
    builds for it and the ControlNet's residuals at its steps, then the CFG combination of the chunks (module
    docstring). The loop calls it once per step, in order: the call count modulo ``steps`` is the step."""
    chunks, calls = len(guidance.order), [0]

    def denoise(x, sigma):
        step, calls[0] = calls[0] % steps, calls[0] + 1
        options = contract.batch_transformer_options(base_model, model_options, list(guidance.order),
                                                     list(guidance.uuids), sigma)
        if compile_wrapper is not None:
            options = extensions.copy_nested_dicts(options)
            extensions.add_wrapper_with_key(extensions.WrappersMP.APPLY_MODEL, WRAPPER_KEY, compile_wrapper, options)
        inputs = {name.removeprefix("cond."): buffers[name] for name in names if name.startswith("cond.")}
        x_in, t_in = torch.cat([x] * chunks), torch.cat([sigma] * chunks)
        if guidance.control is not None and guidance.active[step]:
            inputs["control"] = contract.control_forward(guidance.control, base_model.model_sampling, x_in, t_in,
                                                         {**inputs, **constants}, buffers["control.hint"])
        out = base_model.apply_model(x_in, t_in, **inputs, **constants, transformer_options=options).to(x.dtype)
        if chunks == 1:
            return out
        uncond, cond = out.chunk(chunks)
        return uncond + (cond - uncond) * guidance.cfg

    return denoise
