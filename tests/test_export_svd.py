"""SVD rank reduction (lora.svd): QR trick vs dense SVD, measured error = true error, rank bounds."""
from __future__ import annotations

import math

import pytest
import torch
from test_mix_math import CONV, LINEAR, _lora

from lora.mix import MixEntry, concat_mix
from lora.svd import RankError, lowrank_svd, reduce_modules


def _mix():
    entries = [MixEntry(_lora("lcm", 1, 8, 4.0), 1.0, "accelerator"), MixEntry(_lora("s1", 2, 4, 4.0), 0.8),
               MixEntry(_lora("s2", 3, 4, 1.0), 0.8)]
    return concat_mix(entries)


def test_qr_svd_equals_dense_svd():
    module = _mix()[LINEAR]
    up, down = (module.up * module.scale).double(), module.down.double()
    dense = up @ down
    left, s, right_t = lowrank_svd(up, down)
    s_dense = torch.linalg.svdvals(dense)
    assert torch.allclose(s, s_dense[: s.shape[0]], rtol=1e-9, atol=1e-9)
    assert float((left * s @ right_t - dense).norm() / dense.norm()) < 1e-12


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_reported_error_is_the_true_and_optimal_error(rank):
    mixed = _mix()
    reduced, report = reduce_modules(mixed, rank, device="cpu")
    true_sq = norm_sq = 0.0
    for key in (LINEAR, CONV):
        dense = mixed[key].delta().double()
        approx = reduced[key].delta().double().reshape(dense.shape)
        assert reduced[key].rank == rank and reduced[key].scale == 1.0
        err = float((dense - approx).norm())
        true_sq += err ** 2
        norm_sq += float(dense.norm()) ** 2
        sv = torch.linalg.svdvals(dense.reshape(dense.shape[0], -1))
        optimal = float(sv[rank:].norm() / sv.norm())  # Eckart–Young
        assert math.isclose(report.layer_errors[key], err / float(dense.norm()), rel_tol=1e-3, abs_tol=1e-6)
        assert math.isclose(report.layer_errors[key], optimal, rel_tol=1e-3, abs_tol=1e-6)
    assert math.isclose(report.total_error, math.sqrt(true_sq / norm_sq), rel_tol=1e-3, abs_tol=1e-6)
    assert reduced[CONV].down.shape == (rank, 6, 3, 3) and reduced[CONV].up.shape == (8, rank, 1, 1)


def test_full_rank_truncation_is_lossless():
    mixed = _mix()
    _, report = reduce_modules(mixed, 16, device="cpu")
    assert report.total_error < 1e-5


@pytest.mark.parametrize("rank, message", [(0, ">= 1"), (-3, ">= 1"), (17, "above the concatenated rank 16")])
def test_rank_out_of_range_is_refused(rank, message):
    with pytest.raises(RankError, match=message):
        reduce_modules(_mix(), rank, device="cpu")


def test_errors_are_measured_without_tf32_and_the_setting_is_restored():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        seen = []
        from lora import svd

        original = svd.truncate

        def spy(*args):
            seen.append(torch.get_float32_matmul_precision())
            return original(*args)

        svd.truncate = spy
        try:
            reduce_modules(_mix(), 2, device="cpu")
        finally:
            svd.truncate = original
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)
