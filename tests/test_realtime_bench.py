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
                          "--out", str(tmp_path)],
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
