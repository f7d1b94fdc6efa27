"""A short soak in the suite (issue 18): 40 prompts of scripts/soak.py's mix against a real server on 127.0.0.1.

The full run (1 000 prompts, figures in docs/testing.md) is ``PYTHONPATH=.pack .venv/bin/python scripts/soak.py``.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from lcm_lora_pack.devkit.host import REPO, subprocess_env

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_short_soak_keeps_memory_and_open_files_bounded(tmp_path, model_store):
    command = [sys.executable, str(REPO / "scripts" / "soak.py"), "--prompts", "40", "--warmup", "10",
               "--sample-every", "10", "--max-seconds", "1200", "--workdir", str(tmp_path),
               "--checkpoint", str(model_store / "checkpoints" / "tiny-sd15.safetensors")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1500, env=subprocess_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "soak: bounded" in result.stdout and "| 40 |" in result.stdout, result.stdout[-4000:]
