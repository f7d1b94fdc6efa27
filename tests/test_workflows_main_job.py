"""The README's main job (``make run`` → scripts/run_examples.py), run as a user runs it: a separate process.

On generated models every example must run and land in the output folder with a summary table; on a
user's models folder (``--models``) the workflows run unchanged and a workflow whose published files are
missing is skipped with the missing files named.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from harness.workflow_fixtures import example_models  # noqa: F401
from lcm_lora_pack.devkit import workflows
from lcm_lora_pack.devkit.host import subprocess_env
from PIL import Image

pytestmark = pytest.mark.slow
SCRIPT = workflows.REPO / "scripts" / "run_examples.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900,
                          cwd=workflows.REPO, env=subprocess_env())


def _rows(summary: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


@pytest.mark.timeout(2400)  # every example workflow in a subprocess: ~5 min on 2 idle cores, far more when shared
def test_main_job_runs_every_example_on_generated_models(example_models, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    done = _run("--out", str(out), "--generated-models", str(example_models))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    rows = _rows(summary)
    assert sorted(rows) == workflows.example_names()
    for name in workflows.third_party_example_names():  # the main job's ComfyUI loads the pack alone
        assert rows.pop(name)[0] == "skipped" and f"- {name}: needs {workflows.packs_needed(name)[0]}" in summary
    for name, (status, seconds, _steps, images, _files) in rows.items():
        assert status == "ok" and float(seconds) > 0, (name, rows[name])
        pngs = sorted((out / name).glob("*.png"))
        assert len(pngs) == int(images)
        for png in pngs:
            with Image.open(png) as image:
                assert image.size[1] == workflows.GENERATED_LATENT_SIZE
    assert rows["sd15_lcm_lora_4step"][2] == "4" and rows["sd15_lcm_vs_25step_baseline"][2] == "4 + 25"
    assert (out / "sdxl_lora_export_merged" / "lcm-papercut-sdxl.safetensors").stat().st_size > 0
    assert "| sd15_lcm_lora_4step | ok |" in done.stdout and str(out / "summary.md") in done.stdout


def test_main_job_on_user_models_runs_unchanged_and_names_missing_files(example_models, tmp_path):  # noqa: F811
    user_models = tmp_path / "models"
    for relative in ("checkpoints/v1-5-pruned-emaonly.safetensors", "loras/lcm-lora-sdv1-5.safetensors"):
        (user_models / relative).parent.mkdir(parents=True, exist_ok=True)
        (user_models / relative).symlink_to((example_models / relative).resolve())
    out = tmp_path / "out"
    done = _run("--models", str(user_models), "--out", str(out), "--only", "sd15_lcm_img2img", "sdxl_lcm_lora_4step")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    rows = _rows(summary)
    assert rows["sd15_lcm_img2img"][0] == "ok" and len(list((out / "sd15_lcm_img2img").glob("*.png"))) == 1
    assert rows["sdxl_lcm_lora_4step"][0] == "skipped"
    assert "checkpoints/sd_xl_base_1.0.safetensors" in summary and "loras/lcm-lora-sdxl.safetensors" in summary
    assert not (out / "sdxl_lcm_lora_4step").exists()


def test_main_job_rejects_a_models_path_that_is_not_a_models_folder(tmp_path):
    done = _run("--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--only", "sd15_lcm_img2img")
    assert done.returncode != 0
    assert "not a folder" in done.stdout + done.stderr
