"""Pure mixing math (lora.mix): equation (1) = concatenation (2), weights, normalisation, bad input."""
from __future__ import annotations

import math

import pytest
import torch
from lcm_lora_pack.lora.mix import (
    MixEntry,
    MixError,
    check_entries,
    concat_mix,
    factor_mix,
    mixed_delta,
    normalize_style_weights,
)
from lcm_lora_pack.lora.types import LoraModule, ResolvedLora

LINEAR = "diffusion_model.a.weight"
CONV = "diffusion_model.conv.weight"


def _lora(name: str, seed: int, rank: int, alpha: float, family: str = "sd15", keys=(LINEAR, CONV)) -> ResolvedLora:
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    if LINEAR in keys:
        modules[LINEAR] = LoraModule(down=torch.randn(rank, 12, generator=gen), up=torch.randn(10, rank, generator=gen),
                                     alpha=alpha)
    if CONV in keys:
        modules[CONV] = LoraModule(down=torch.randn(rank, 6, 3, 3, generator=gen),
                                   up=torch.randn(8, rank, 1, 1, generator=gen), alpha=alpha)
    return ResolvedLora(name=name, sha256=f"{seed:064x}", format="kohya", family=family, kind="style", modules=modules)


def _cast(lora: ResolvedLora, dtype: torch.dtype) -> ResolvedLora:
    modules = {k: LoraModule(down=m.down.to(dtype), up=m.up.to(dtype), alpha=m.alpha) for k, m in lora.modules.items()}
    return ResolvedLora(**{**lora.__dict__, "modules": modules})


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_concat_equals_weighted_sum_of_deltas_for_linear_and_conv():
    entries = [MixEntry(_lora("lcm", 1, 8, 4.0), 1.0, "accelerator"), MixEntry(_lora("style", 2, 4, 4.0), 0.8),
               MixEntry(_lora("other", 3, 2, 1.0, keys=(LINEAR,)), -0.3)]
    mixed = concat_mix(entries)
    assert mixed[LINEAR].rank == 14 and mixed[CONV].rank == 12
    assert mixed[CONV].down.shape == (12, 6, 3, 3) and mixed[CONV].up.shape == (8, 12, 1, 1)
    for key in (LINEAR, CONV):
        expected = sum(e.weight * e.lora.modules[key].delta() for e in entries if key in e.lora.modules)
        assert mixed[key].scale == 1.0
        assert _rel(mixed[key].delta(), expected) < 1e-6
        assert _rel(mixed_delta(entries, key), expected) < 1e-6


def test_weights_w_and_zero_equal_the_single_lora_at_w_and_order_does_not_matter():
    a, b = _lora("a", 1, 8, 8.0), _lora("b", 2, 4, 2.0)
    pair = concat_mix([MixEntry(a, 0.7), MixEntry(b, 0.0)])
    single = concat_mix([MixEntry(a, 0.7)])
    swapped = concat_mix([MixEntry(b, 0.5), MixEntry(a, 0.7)])
    straight = concat_mix([MixEntry(a, 0.7), MixEntry(b, 0.5)])
    for key in (LINEAR, CONV):
        assert torch.equal(pair[key].delta(), single[key].delta())
        assert _rel(pair[key].delta(), 0.7 * a.modules[key].delta()) < 1e-6
        assert _rel(swapped[key].delta(), straight[key].delta()) < 1e-6


def test_style_normalisation_keeps_accelerator_weight():
    entries = [MixEntry(_lora("lcm", 1, 2, 2.0), 1.0, "accelerator"), MixEntry(_lora("s1", 2, 2, 2.0), 0.8),
               MixEntry(_lora("s2", 3, 2, 2.0), 0.8), MixEntry(_lora("s3", 4, 2, 2.0), -0.4)]
    assert normalize_style_weights(entries, "none") == [1.0, 0.8, 0.8, -0.4]
    summed = normalize_style_weights(entries, "sum", budget=1.0)
    assert summed[0] == 1.0 and math.isclose(sum(abs(w) for w in summed[1:]), 1.0)
    assert math.isclose(summed[1] / summed[3], 0.8 / -0.4)
    energy = normalize_style_weights(entries, "l2", budget=0.8)
    assert energy[0] == 1.0 and math.isclose(math.sqrt(sum(w * w for w in energy[1:])), 0.8)
    only_accel = [entries[0]]
    assert normalize_style_weights(only_accel, "sum") == [1.0]
    with pytest.raises(MixError, match="unknown"):
        normalize_style_weights(entries, "max")


@pytest.mark.parametrize("entries, message", [
    ([], "empty"),
    ([MixEntry(_lora("a", 1, 2, 2.0), 0.0), MixEntry(_lora("b", 2, 2, 2.0), 0.0)], "all LoRA weights are zero"),
    ([MixEntry(_lora("a", 1, 2, 2.0), 1.0), MixEntry(_lora("x", 2, 2, 2.0, family="sdxl"), 1.0)],
     "different base families"),
    ([MixEntry(_lora("a", 1, 2, 2.0), 1.0, "booster")], "role 'booster'"),
    ([MixEntry(_lora("a", 1, 2, 2.0), float("nan"))], "not a finite number"),
])
def test_bad_mixes_are_refused_with_a_clear_message(entries, message):
    with pytest.raises(MixError, match=message):
        check_entries(entries)


def test_shape_mismatch_between_loras_is_refused():
    a = _lora("a", 1, 2, 2.0, keys=(LINEAR,))
    b = ResolvedLora(name="b", sha256="0" * 64, format="kohya", family="sd15", kind="style",
                 modules={LINEAR: LoraModule(down=torch.randn(2, 13), up=torch.randn(10, 2), alpha=2.0)})
    with pytest.raises(MixError, match="disagree on the shape"):
        concat_mix([MixEntry(a, 1.0), MixEntry(b, 1.0)])


@pytest.mark.parametrize("dtypes, factor_dtype", [
    ((torch.float16, torch.float16, torch.float16), torch.float16),
    ((torch.float32, torch.float32, torch.float32), torch.float32),
    ((torch.bfloat16, torch.bfloat16, torch.bfloat16), torch.bfloat16),
    ((torch.float16, torch.float32, torch.float16), torch.float32),
    ((torch.float16, torch.bfloat16, torch.float16), torch.float32),
])
def test_factors_keep_the_source_dtype_and_equal_the_scaled_float32_concat(dtypes, factor_dtype):
    """U', D' in the files' dtype (float32 when they disagree); U'·diag(c) == [λ₁s₁U₁|…] in float32 exactly."""
    loras = [_lora("lcm", 1, 8, 4.0), _lora("style", 2, 4, 3.0), _lora("other", 3, 2, 1.0, keys=(LINEAR,))]
    entries = [MixEntry(_cast(lora, dtype), weight) for lora, dtype, weight in zip(loras, dtypes, (1.0, 0.8, -0.3), strict=True)]
    factors, concat = factor_mix(entries), concat_mix(entries)
    for key in (LINEAR, CONV):
        terms = [(e.weight, e.lora.modules[key]) for e in entries if key in e.lora.modules]
        assert factors[key].up.dtype == factors[key].down.dtype == factor_dtype
        assert factors[key].rank_scale.dtype == torch.float32
        itemsize = torch.empty((), dtype=factor_dtype).element_size()
        assert factors[key].nbytes == sum(m.up.numel() + m.down.numel() for _, m in terms) * itemsize
        expected_scale = torch.cat([torch.full((m.rank,), w * m.scale, dtype=torch.float32) for w, m in terms])
        assert torch.equal(factors[key].rank_scale, expected_scale)
        former_up = torch.cat([m.up.reshape(m.up.shape[0], -1).float() * (w * m.scale) for w, m in terms], dim=1)
        former_down = torch.cat([m.down.reshape(m.rank, -1).float() for _, m in terms], dim=0)
        assert torch.equal(factors[key].scaled_up(), former_up)
        assert torch.equal(concat[key].up.reshape(former_up.shape), former_up)
        assert torch.equal(concat[key].down.reshape(former_down.shape), former_down)
        assert concat[key].up.dtype == concat[key].down.dtype == torch.float32 and concat[key].scale == 1.0
    assert factors[CONV].down.shape == (12, 6, 3, 3) and factors[CONV].up.shape == (8, 12, 1, 1)
