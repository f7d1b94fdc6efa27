"""Batched SVD reduction and error measurement (lora.svd.reduce_modules, lora.export.measure_concat,
lora.batched): results equal dense float64 references computed here with torch.linalg on mixed shapes (linear,
1x1 and 3x3 conv, rank below the target, a zero layer, out < rank) and for shape groups split into chunks."""
from __future__ import annotations

import math

import pytest
import torch
from lcm_lora_pack.lora import svd
from lcm_lora_pack.lora.batched import difference_norms_sq
from lcm_lora_pack.lora.export import build_export, cast_modules, measure_concat
from lcm_lora_pack.lora.mix import MixEntry, concat_mix
from lcm_lora_pack.lora.svd import reduce_modules
from lcm_lora_pack.lora.types import LoraModule, ResolvedLora
from safetensors.torch import load, save

RANK = 6
# key → (weight shape, rank of the concatenated module); several keys share a shape so that groups form.
LAYERS = {
    **{f"lin_a{i}": ((24, 20), 10) for i in range(5)},   # one group of five
    **{f"lin_b{i}": ((12, 30), 9) for i in range(2)},
    "conv3": ((16, 4, 3, 3), 8),
    "conv3_twin": ((16, 4, 3, 3), 8),
    "conv1": ((16, 12, 1, 1), 7),
    "low_rank": ((18, 14), 4),   # rank 4 < target 6: keeps rank 4, error ~0
    "narrow": ((5, 40), 9),      # out = 5 < target: keeps rank 5
    "zero": ((24, 20), 10),      # ΔW = 0 (same shape as lin_a: stacked with them)
}


def _module(shape: tuple[int, ...], rank: int, alpha: float, gen: torch.Generator) -> LoraModule:
    down = torch.randn(rank, *shape[1:], generator=gen)
    up = torch.randn(shape[0], rank, *([1] * (len(shape) - 2)), generator=gen)
    # decaying spectrum, so the truncation error is neither ~0 nor ~1
    up = up * torch.logspace(0, -1.5, rank).reshape(1, rank, *([1] * (len(shape) - 2)))
    return LoraModule(down=down, up=up, alpha=alpha)


def _modules() -> dict[str, LoraModule]:
    gen = torch.Generator().manual_seed(7)
    modules = {key: _module(shape, rank, 0.5 * rank, gen) for key, (shape, rank) in LAYERS.items()}
    modules["zero"] = LoraModule(down=modules["zero"].down, up=torch.zeros_like(modules["zero"].up), alpha=5.0)
    return modules


def _dense(module: LoraModule) -> torch.Tensor:
    up, down = module.up.double(), module.down.double()
    return module.scale * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1))


@pytest.fixture(scope="module")
def modules() -> dict[str, LoraModule]:
    return _modules()


@pytest.mark.parametrize("chunk_items", [None, 2, 1])
def test_reduce_modules_is_the_dense_eckart_young_optimum(modules, chunk_items, monkeypatch):
    """Every layer: rank min(target, out, in, R), error = √Σ_{k>r}σ_k² of torch.linalg.svdvals(dense ΔW), the
    reported error equals the true error of the returned factors, conv shapes are restored; also when groups are
    split into chunks of 2 or 1 (forced by a tiny chunk_bytes) — and batching really stacks a whole group."""
    stacks = []
    original = svd._reduce_chunk
    monkeypatch.setattr(svd, "_reduce_chunk", lambda group, *args: stacks.append(len(group)) or original(group,
                                                                                                        *args))
    item_bytes = 4 * (24 + 20) * 10  # a lin_a layer's float32 factors
    chunk_bytes = item_bytes * chunk_items if chunk_items else svd.CHUNK_BYTES
    reduced, report = reduce_modules(modules, RANK, device="cpu", chunk_bytes=chunk_bytes)
    assert list(reduced) == list(modules) and list(report.layer_errors) == list(modules)
    assert max(stacks) == (chunk_items or 6)  # lin_a0..4 + zero: 6 layers of one shape
    true_sq = norm_sq = 0.0
    for key, module in modules.items():
        dense, approx = _dense(module), _dense(reduced[key])
        sigma = torch.linalg.svdvals(dense)
        keep = min(RANK, *dense.shape, module.rank)
        assert reduced[key].rank == keep and reduced[key].scale == 1.0
        assert reduced[key].down.shape[1:] == module.down.shape[1:]
        assert reduced[key].up.shape == (module.up.shape[0], keep, *module.up.shape[2:])
        true_error = float((dense - approx).norm())
        optimal = float(sigma[keep:].norm())
        norm = float(dense.norm())
        true_sq, norm_sq = true_sq + true_error**2, norm_sq + norm**2
        if key == "zero":
            assert norm == 0.0 and true_error == 0.0 and report.layer_errors[key] == 0.0
            continue
        assert math.isclose(true_error / norm, optimal / norm, rel_tol=1e-4, abs_tol=1e-6), key
        assert math.isclose(report.layer_errors[key], true_error / norm, rel_tol=1e-4, abs_tol=1e-6), key
        if keep < module.rank and keep == RANK:
            assert optimal / norm > 1e-3  # a real truncation, not a lossless one
    assert report.layer_errors["low_rank"] < 1e-6
    assert math.isclose(report.total_error, math.sqrt(true_sq / norm_sq), rel_tol=1e-4)


def test_reduced_factors_do_not_depend_on_the_chunking(modules):
    whole, _ = reduce_modules(modules, RANK, device="cpu", measure=False)
    single, _ = reduce_modules(modules, RANK, device="cpu", measure=False, chunk_bytes=1)
    for key in modules:
        assert torch.allclose(_dense(whole[key]), _dense(single[key]), rtol=1e-5, atol=1e-6), key


def _entries() -> list[MixEntry]:
    """fp16 LCM-like LoRA on every layer, an fp32 style LoRA on some layers, a third with a negative weight."""
    gen = torch.Generator().manual_seed(11)

    def lora(name, rank, alpha, keys, dtype):
        modules = {}
        for key in keys:
            shape = LAYERS[key][0]
            module = _module(shape, rank, alpha, gen)
            modules[key] = LoraModule(down=module.down.to(dtype), up=module.up.to(dtype), alpha=alpha)
        return ResolvedLora(name=name, sha256=name * 8, format="kohya", family="sdxl", kind="style", modules=modules)

    every = [k for k in LAYERS if k not in ("zero", "narrow")]
    return [MixEntry(lora("lcm", 4, 1.0, every, torch.float16), 0.9, "accelerator"),
            MixEntry(lora("style", 3, 3.0, every[::2], torch.float32), 0.8),
            MixEntry(lora("neg", 2, 1.0, every[:4], torch.float32), -0.3)]


def _reference(entries: list[MixEntry], key: str) -> torch.Tensor:
    """Equation (1) densely in float64: Σ λᵢ·sᵢ·UᵢDᵢ from the source tensors."""
    return sum(e.weight * _dense(e.lora.modules[key]) for e in entries if key in e.lora.modules)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("chunk_bytes", [None, 1])
def test_measure_concat_equals_the_dense_float64_measurement(dtype, chunk_bytes):
    """Per-layer errors of written factors (concat cast to fp32 / fp16) equal ‖ΔW_written − ΔW‖/‖ΔW‖ computed
    densely in float64, to 1e-4 relative: the fp32 concat's ~1e-8 is measured, not rounding noise."""
    entries = _entries()
    weights = [e.weight for e in entries]
    written = cast_modules(concat_mix(entries, weights), dtype)
    kwargs = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    report = measure_concat(entries, weights, written, torch.device("cpu"), **kwargs)
    assert list(report.layer_errors) == list(written)
    true_sq = norm_sq = 0.0
    for key, module in written.items():
        reference = _reference(entries, key)
        error = float((_dense(module) - reference).norm())
        norm = float(reference.norm())
        true_sq, norm_sq = true_sq + error**2, norm_sq + norm**2
        assert (1e-10 if dtype == torch.float32 else 1e-5) < error / norm < (1e-6 if dtype == torch.float32
                                                                           else 1e-2), key
        assert math.isclose(report.layer_errors[key], error / norm, rel_tol=1e-4), key
    assert math.isclose(report.total_error, math.sqrt(true_sq / norm_sq), rel_tol=1e-4)


@pytest.mark.parametrize(("rows", "inner", "cols"), [(40, 6, 20), (40, 30, 20), (20, 6, 40), (7, 3, 7)])
def test_difference_norms_resolve_tiny_differences(rows, inner, cols):
    """‖UD − U'D'‖ with U'D' = UD + ε·E·D (ε = 1e-9) and ‖UD‖ equal dense float64 values, in all branches
    (QR on either side, or the direct product)."""
    gen = torch.Generator().manual_seed(rows + inner + cols)
    up = torch.randn(3, rows, inner, generator=gen, dtype=torch.float64)
    down = torch.randn(3, inner, cols, generator=gen, dtype=torch.float64)
    perturbation = 1e-9 * torch.randn(3, rows, inner, generator=gen, dtype=torch.float64)
    left = torch.cat([up, -(up + perturbation)], dim=-1)
    right = torch.cat([down, down], dim=-2)
    error_sq, norm_sq = difference_norms_sq(left, right, inner)
    expected_error = (perturbation @ down).square().sum(dim=(-2, -1))
    expected_norm = (up @ down).square().sum(dim=(-2, -1))
    assert torch.allclose(error_sq.sqrt(), expected_error.sqrt(), rtol=1e-5)
    assert torch.allclose(norm_sq, expected_norm, rtol=1e-12)


def test_fp32_svd_export_has_tensors_of_their_own_and_saves():
    """The SVD returns views of one buffer per shape group; the written fp32 tensors must not share storage
    (safetensors refuses that) and must round-trip."""
    entries = _entries()
    names = {key: f"lora_unet_{key}" for key in LAYERS if key not in ("zero", "narrow")}
    result = build_export(entries, [e.weight for e in entries], "svd", 3, names, device="cpu", save_dtype="fp32")
    loaded = load(save(result.tensors))
    assert loaded.keys() == result.tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in result.tensors.items())


def test_core_svd_over_threads_equals_one_batched_call():
    """The thread-pool split of a stack of core SVDs gives the SVD of every matrix (pieces put back in order)."""
    cores = torch.randn(37, 9, 7, generator=torch.Generator().manual_seed(3))
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        u, s, vh = svd.core_svd(cores)
    finally:
        torch.set_num_threads(previous)
    assert u.shape == (37, 9, 7) and s.shape == (37, 7) and vh.shape == (37, 7, 7)
    assert torch.allclose(s, torch.linalg.svdvals(cores), rtol=1e-5, atol=1e-6)
    assert torch.allclose((u * s[:, None, :]) @ vh, cores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 40, 7), (50, 12), (2, 300, 64)])
def test_cholesky_qr2_is_a_thin_qr(shape):
    """The GPU path of ``thin_qr`` (CholeskyQR2 in float64), forced on the CPU: A = QR, QᵀQ = I, R upper."""
    from lcm_lora_pack.lora.batched import thin_qr

    generator = torch.Generator().manual_seed(3)
    matrices = torch.randn(shape, generator=generator, dtype=torch.float64)
    matrices[..., 1] *= 1e-3  # a badly scaled column: κ ~ 1e3 (one CholeskyQR pass alone loses ~1e-10)
    q, r = thin_qr(matrices, cholesky=True)
    identity = torch.eye(shape[-1], dtype=torch.float64)
    assert torch.allclose(q.mT @ q, identity.expand_as(q.mT @ q), atol=1e-13)
    assert torch.allclose(q @ r, matrices, atol=1e-12)
    assert torch.equal(r, r.triu())


def test_cholesky_qr2_falls_back_to_householder_on_rank_deficient_factors():
    from lcm_lora_pack.lora.batched import thin_qr

    matrices = torch.randn(2, 30, 4, dtype=torch.float64)
    matrices[1, :, 3] = matrices[1, :, 2]  # a repeated column: the Gram matrix is singular
    q, r = thin_qr(matrices, cholesky=True)
    reference_q, reference_r = torch.linalg.qr(matrices, mode="reduced")
    assert torch.equal(q, reference_q) and torch.equal(r, reference_r)


def test_cholesky_qr2_falls_back_when_the_factors_are_nearly_dependent():
    """κ ~ 1e12: Cholesky still factors the Gram matrix but Q would not be orthonormal; Householder is used."""
    from lcm_lora_pack.lora.batched import thin_qr

    matrices = torch.randn(1, 50, 4, dtype=torch.float64)
    matrices[0, :, 3] = matrices[0, :, 2] + 1e-12 * torch.randn(50, dtype=torch.float64)
    q, r = thin_qr(matrices, cholesky=True)
    reference_q, reference_r = torch.linalg.qr(matrices, mode="reduced")
    assert torch.equal(q, reference_q) and torch.equal(r, reference_r)
