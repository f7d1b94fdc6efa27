"""``make run`` on the demo family (the default), run as a user runs it: a separate process, one prompt."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.demo.sheet import COLUMNS
from lcm_lora_pack.devkit.host import subprocess_env
from PIL import Image

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_main_job_writes_the_sheet_and_the_quality_table(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "run_examples.py"), "--out", str(out),
                           "--demo-prompts", "1"], capture_output=True, text=True, timeout=1800, cwd=REPO,
                          env=subprocess_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    demo = out / "demo"
    sheets = sorted(demo.glob("sheet_*.png"))
    assert [p.name for p in sheets] == ["sheet_red_circle_on_a_white_background.png"]
    with Image.open(sheets[0]) as sheet:
        assert sheet.width > len(COLUMNS) * 256
    images = sorted(p.name for p in (demo / "images").glob("*.png"))
    assert images == sorted(f"red_circle_on_a_white_background_{c.key}.png" for c in COLUMNS)
    summary = (demo / "summary.md").read_text()
    assert "| a red circle on a white background |" in summary
    assert summary.count("mask IoU") == 3  # the three ControlNet columns (teacher, LCM-LoRA, + style)
    assert "| LCM-LoRA, LCM, 4 steps, cfg 1 |" in summary and "| target | measured | met |" in summary
    assert (demo / "quality.md").read_text() in summary
