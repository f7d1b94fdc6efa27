"""CPU smoke run of bench/bench_realtime.py: it runs end to end, prints its tables, and its fast-path arms ran on
the fast path (the CPU stand-in for the CUDA graph) with eager's exact latent and image. Never timings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.devkit.host import subprocess_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_realtime_bench_smoke(tmp_path):
    run = subprocess.run([sys.executable, "-m", "lcm_lora_pack.bench.bench_realtime", "--smoke", "--profile-host", "2",
                          "--profile-kernels", "baseline,channels_last", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=1200, env=subprocess_env())
    assert run.returncode == 0, run.stderr[-4000:]
    assert "BENCH TABLES WRITTEN" in run.stdout and "0 failed sections" in run.stdout, run.stdout[-4000:]
    report = (tmp_path / "bench_report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    for arm in ("eager: ModelSamplingLCM → KSamplerLCM", "fast path cuda_graph → KSamplerLCM",
                "eager KSamplerLCM + VAEDecode", "fast path cuda_graph + FastVAEDecode cuda_graph"):
        assert arm in rows and "FAILED" not in rows[arm], arm
    for arm in ("fast path cuda_graph → KSamplerLCM", "fast path cuda_graph + FastVAEDecode cuda_graph"):
        assert "vs eager: max abs 0, rel L2 0 " in rows[arm] + " ", rows[arm]
    assert "cProfile of fast path cuda_graph → KSamplerLCM, 2 calls" in report and "run_fast_path" in report
    assert "calls on the fast path" in report and ", eager 0" in report
    assert "- device:" in report and "- command:" in report
    kernels = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in report.splitlines()
               if line.startswith(("| baseline |", "| channels_last |"))}
    arms = ("eager UNet step", "compiled UNet step", "compiled captured loop")
    assert set(kernels) == {(variant, arm) for variant in ("baseline", "channels_last") for arm in arms}, kernels
    for line in kernels.values():
        cells = [float(cell) for cell in line.split("|")[3:-1]]  # total, 7 categories, launches, casts
        assert cells[0] > 0 and abs(sum(cells[1:8]) - cells[0]) < 0.02 * cells[0] + 0.05, line
    assert "kernels per UNet step (ATen own CPU ms" in report and "baseline, compiled captured loop: top 12" in report


def test_kernel_categories_of_cuda_triton_and_aten_names():
    """The kernel profile's categories for names the profiler reports (cuDNN, CUTLASS/cuBLAS, flash and
    memory-efficient attention, ATen's copy and group-norm kernels, inductor's triton kernels, CPU ATen ops)."""
    from lcm_lora_pack.bench.profile_sections import kernel_category

    expected = {
        "sm90_xmma_fprop_implicit_gemm_indexed_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64": "conv",
        "cutlass__5x_cudnn::Kernel<cutlass_tensorop_f16_s16816fprop_optimized_f16_128x128_32x4_nhwc>": "conv",
        "ampere_fp16_s16816gemm_fp16_128x128_ldg8_f2f_stages_32x5_tn": "gemm",
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>, true>": "attention",
        "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<half>::Params)": "attention",
        "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(...)>": "copy/cast",
        "void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<c10::Half>": "norm",
        "void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel(...)>": "elementwise",
        "void cudnn::ops::nchwToNhwcKernel<__half, __half, float, false, true>": "copy/cast",
        "triton_red_fused_native_group_norm_0": "norm", "triton_poi_fused__to_copy_3": "copy/cast",
        "triton_poi_fused_add_silu_7": "elementwise", "triton_tem_fused_mm_12": "gemm",
        "triton_tem_fused_convolution_2": "conv", "triton_per_fused__softmax_4": "attention",
        "aten::mkldnn_convolution": "conv", "aten::addmm": "gemm", "aten::native_group_norm": "norm",
        "aten::_to_copy": "copy/cast", "aten::silu": "elementwise", "cudaLaunchKernel": "other",
    }
    assert {name: kernel_category(name) for name in expected} == expected


def test_client_phases_split_a_job_at_its_messages():
    """``live_client.phases``: each phase runs from its message to the next; nodes by class, summed per class;
    the end is ``execution_success`` or, on servers without it, ``executing`` with no node."""
    from lcm_lora_pack.bench.device.live_client import phases

    prompt = {"1": {"class_type": "A"}, "2": {"class_type": "B"}, "3": {"class_type": "B"}}
    stamps = [(0.000, "post", None), (0.004, "answered", None), (0.005, "execution_start", None),
              (0.006, "execution_cached", None), (0.007, "executing", "1"), (0.017, "progress", None),
              (0.027, "executing", "2"), (0.030, "executed", "2"), (0.031, "executing", "3"),
              (0.036, "execution_success", None), (0.040, "viewed", None)]
    got = phases(stamps, prompt)
    assert list(got) == ["POST", "queue", "cache", "A", "B", "view"]
    expected = {"POST": 4.0, "queue": 1.0, "cache": 2.0, "A": 20.0, "B": 9.0, "view": 4.0}
    assert all(abs(got[k] - v) < 1e-9 for k, v in expected.items()), got
    old_server = [*stamps[:9], (0.036, "executing", None), (0.040, "viewed", None)]
    assert phases(old_server, prompt) == got
