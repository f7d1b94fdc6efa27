"""CPU smoke run of bench/bench_distill.py: both arms run and the table is printed (no timing asserts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.devkit.host import comfyui_root, subprocess_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_distill_smoke(tmp_path):
    env = subprocess_env(COMFYUI_PATH=str(comfyui_root()), CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, "-m", "lcm_lora_pack.bench.bench_distill", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "BENCH DISTILL WRITTEN" in run.stdout
    report = (tmp_path / "bench_distill.md").read_text()
    assert "- device:" in report and "- command:" in report
    assert "reference (diffusers UNet + PEFT" in report and "pack trainer" in report
    assert "× speed" in report
