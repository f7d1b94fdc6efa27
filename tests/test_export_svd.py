"""SVD rank reduction (lora.svd): QR trick vs dense SVD, measured error = true error, rank bounds; the export's
reported error is the error of the tensors as written in every save dtype."""
from __future__ import annotations

import math

import pytest
import torch
from lcm_lora_pack.lora.export import SAVE_DTYPES, ExportError, build_export
from lcm_lora_pack.lora.mix import MixEntry, concat_mix, mixed_delta
from lcm_lora_pack.lora.svd import RankError, lowrank_svd, reduce_modules
from test_mix_math import CONV, LINEAR, _lora


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
        from lcm_lora_pack.lora import svd

        original = svd._reduce_chunk

        def spy(*args):
            seen.append(torch.get_float32_matmul_precision())
            return original(*args)

        svd._reduce_chunk = spy
        try:
            reduce_modules(_mix(), 2, device="cpu")
        finally:
            svd._reduce_chunk = original
        assert seen and set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(previous)


def _file_delta(tensors: dict, name: str) -> torch.Tensor:
    """ΔW of one module as a loader computes it from the written tensors: (alpha/rank)·up·down, in float64."""
    up, down = tensors[f"{name}.lora_up.weight"].double(), tensors[f"{name}.lora_down.weight"].double()
    scale = float(tensors[f"{name}.alpha"]) / down.shape[0]
    return scale * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1))


@pytest.mark.parametrize("save_dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize(("mode", "rank"), [("concat", 1), ("svd", 3)])
def test_export_reports_the_error_of_the_tensors_as_written(save_dtype, mode, rank):
    """build_export measures its errors after the cast to the save dtype, against equation (1) in float64."""
    entries = [MixEntry(_lora("lcm", 1, 8, 4.0), 1.0, "accelerator"), MixEntry(_lora("s1", 2, 4, 4.0), 0.8),
               MixEntry(_lora("s2", 3, 4, 1.0), 0.8)]
    names = {LINEAR: "lora_unet_linear", CONV: "lora_unet_conv"}
    result = build_export(entries, [e.weight for e in entries], mode, rank, names, device="cpu",
                          save_dtype=save_dtype)
    assert result.metadata["lcmpack.save_dtype"] == save_dtype
    assert result.tensors["lora_unet_conv.lora_up.weight"].dtype == SAVE_DTYPES[save_dtype]
    assert result.tensors["lora_unet_conv.alpha"].dtype == torch.float32
    for key, name in names.items():
        reference = mixed_delta(entries, key).double()
        reference = reference.reshape(reference.shape[0], -1)
        true = float((_file_delta(result.tensors, name) - reference).norm() / reference.norm())
        assert math.isclose(result.report.layer_errors[key], true, rel_tol=1e-3, abs_tol=1e-7), (key, true)
        if mode == "concat" and save_dtype != "fp32":
            assert true > 1e-5  # the cast is really measured (the fp32 concat error is ~1e-7)


def test_unknown_save_dtype_is_refused():
    with pytest.raises(ExportError, match="save dtype 'fp8' is unknown"):
        build_export([MixEntry(_lora("lcm", 1, 8, 4.0), 1.0, "accelerator")], [1.0], "concat", 1,
                     {LINEAR: "a", CONV: "b"}, device="cpu", save_dtype="fp8")
