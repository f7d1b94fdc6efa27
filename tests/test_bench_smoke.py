"""CPU smoke run of the benchmark script: it runs every section end to end and prints its tables.

Checks that the script works (tables present, every section ran or said why it skipped), never timings.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.devkit.host import subprocess_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-smoke")
    run = subprocess.run([sys.executable, "-m", "lcm_lora_pack.bench.lcm_bench", "--smoke", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=900, env=subprocess_env())
    return run, out


@pytest.mark.slow
def test_smoke_run_exits_cleanly_and_prints_tables(smoke_run):
    run, out = smoke_run
    assert run.returncode == 0, run.stderr[-4000:]
    assert "BENCH TABLES WRITTEN" in run.stdout
    for heading in ("eager UNet step", "4-step LCM sampling", "end to end", "LoRA apply",
                    "LCM-LoRA patched vs unpatched"):
        assert heading in run.stdout, f"table {heading!r} missing from the output"
    assert "0 failed sections" in run.stdout, run.stdout[-4000:]


@pytest.mark.slow
def test_smoke_runs_the_pack_arms_next_to_core(smoke_run):
    """The pack's nodes ran (a renamed input or a missing node would show as FAILED / SKIPPED rows)."""
    _, out = smoke_run
    rows = {line.split("|")[1].strip(): line for line in (out / "bench_report.md").read_text().splitlines()
            if line.startswith("| ")}
    for arm in ("pack KSamplerLCM", "pack ModelSamplingLCM + LCMSampler + LCMScheduler (SamplerCustom)",
                "ablation: preset → KSamplerLCM with both undone (pack before)",
                "core ModelSamplingDiscrete(lcm) + KSampler lcm/simple", "pack LCMLoraLoader: LCM alone",
                "pack LoraStack ×3 → LoraMixer: LCM + 2 style"):
        assert arm in rows, f"row {arm!r} missing"
        assert "FAILED" not in rows[arm] and "SKIPPED" not in rows[arm], rows[arm]


@pytest.mark.slow
def test_smoke_report_has_environment_and_rows(smoke_run):
    _, out = smoke_run
    report = (out / "bench_report.md").read_text()
    assert "- device:" in report and "- command:" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "median ms" not in line]
    timed = [line for line in rows if "SKIPPED" not in line and "FAILED" not in line and "| – |" not in line]
    assert timed, "no timed row in the report"
    assert "core ModelSamplingDiscrete(lcm) + KSampler lcm/simple" in report
    assert (out / "bench_records.json").is_file()


@pytest.mark.slow
def test_smoke_end_to_end_measures_parts_and_scenarios(smoke_run):
    """The e2e section times each part on its own and the graph per re-run scenario, and names the dtypes."""
    _, out = smoke_run
    report = (out / "bench_report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    for part in ("part: CLIPTextEncode positive", "part: CLIPTextEncode negative", "part: VAEDecode (full SD VAE)",
                 "part: VAEDecode (TAESD; different decoder)"):
        assert part in rows and "FAILED" not in rows[part], part
    for scenario in ("new seed", "new prompt", "cold", "sampler alone"):
        assert scenario in rows and "×**" in rows[scenario], f"scenario row {scenario!r} missing or not timed"
    lcm_graphs = [line for name, line in rows.items() if name.startswith("graph, ") and "LCM-LoRA 4-step" in name]
    assert len(lcm_graphs) == 3 and all("negative never encoded" in line for line in lcm_graphs)
    assert any(name.startswith("informational, cold:") and "TAESD" in name for name in rows)
    assert "ComfyUI picked: unet " in report and "; vae " in report
