"""The install route the README offers today, followed as a new user would (issue 18).

A fresh copy of the host's ComfyUI in a temporary folder (no pack in it), the pack's tracked files copied into
``custom_nodes/lcm-lora-pack`` (what ``git clone`` or unzipping a download gives: no symlink, no ``.venv``),
its ``requirements.txt`` checked to be PyPI names only and satisfied in this Python (``pip install --dry-run
--no-index`` has nothing to install), ComfyUI's own ``main.py`` started on 127.0.0.1 the plain way, every node
of the README's table listed by ``/object_info``, and the main example workflow (API twin) run to success.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.workflow_fixtures import example_models  # noqa: F401
from lcm_lora_pack.devkit import workflows
from lcm_lora_pack.devkit.host import PACK_FOLDER_NAME, REPO, comfyui_root
from lcm_lora_pack.devkit.server import free_port
from packaging.requirements import Requirement

AUTOMATION_SCRIPT = REPO / "scripts" / "automation_example.py"

pytestmark = [pytest.mark.server, pytest.mark.slow]
EXAMPLE = "sd15_lcm_lora_4step"
HOST_ONLY = {"user", "output", "temp", "input", "__pycache__", ".git"}


def tracked_files() -> list[str]:
    """The repository's tracked files (what a clone or a release download holds)."""
    try:
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True,
                                timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.fail(f"the install-route test copies the tracked files and needs git and a checkout ({error})")
    return [name for name in listed.decode().split("\0") if name and (REPO / name).is_file()]


def fresh_comfyui(into: Path) -> Path:
    """A copy of the host's ComfyUI tree without the pack link provisioning put into its ``custom_nodes``."""
    root = comfyui_root()

    def ignore(folder: str, names: list[str]) -> set[str]:
        # Host-only folders (input, output, ...) are dropped at the top only: 0.33 has a package comfy_api/input.
        top = Path(folder) == Path(root)
        dropped = {n for n in names if (top and n in HOST_ONLY) or n in ("__pycache__", ".git") or n.endswith(".pyc")}
        if Path(folder).name == "custom_nodes":
            dropped |= {n for n in names if n not in ("example_node.py.example", "websocket_image_save.py")}
        return dropped

    return Path(shutil.copytree(root, into / "ComfyUI", symlinks=False, ignore=ignore))


def install_pack(comfy: Path) -> Path:
    target = comfy / "custom_nodes" / PACK_FOLDER_NAME
    for name in tracked_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    return target


def check_requirements(pack: Path) -> list[Requirement]:
    """Every requirement is a PyPI name (no URL), installed here, and ``pip`` has nothing left to install."""
    lines = [line.split("#")[0].strip() for line in (pack / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    for requirement in requirements:
        assert requirement.url is None, f"{requirement} is not a PyPI requirement"
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
    dry_run = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r",
                              str(pack / "requirements.txt")], capture_output=True, text=True, timeout=300)
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    assert "Would install" not in dry_run.stdout, dry_run.stdout
    return requirements


def readme_node_ids() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Nodes"):text.index("## Example workflows")]
    return set(re.findall(r"`(LCMPack_\w+)`", section))


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"main.py exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/system_stats", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    pytest.fail(f"main.py did not answer in {timeout} s:\n{log.read_text()[-4000:]}")


def test_the_documented_install_route_works_in_a_fresh_comfyui(tmp_path, example_models):  # noqa: F811
    comfy = fresh_comfyui(tmp_path)
    pack = install_pack(comfy)
    assert not pack.is_symlink() and (pack / "__init__.py").is_file() and not (pack / ".venv").exists()
    names = {r.name for r in check_requirements(pack)}
    assert names == {Requirement(d).name for d in ("safetensors", "peft", "einops")}
    workflows.link_models(example_models, comfy)  # the user's downloaded models, in ComfyUI's own models/
    port, log = free_port(), tmp_path / "main.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)],
                                   cwd=comfy, stdout=sink, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, process, log)
        with urllib.request.urlopen(url + "/object_info", timeout=60) as response:
            object_info = json.loads(response.read())
        listed = {node_id for node_id in object_info if node_id.startswith("LCMPack_")}
        assert listed == readme_node_ids(), (listed, log.read_text()[-3000:])
        prompt = workflows.substitute_api(workflows.load_api(EXAMPLE))
        workflow = tmp_path / f"{EXAMPLE}.json"
        workflow.write_text(json.dumps(prompt))
        done = subprocess.run([sys.executable, str(AUTOMATION_SCRIPT), str(workflow), "--server", url,
                               "--out", str(tmp_path / "images"), "--timeout", "600"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert len(list((tmp_path / "images").glob("*.png"))) == 1, done.stdout[-3000:]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    failed = [line for line in log.read_text(errors="replace").splitlines()
              if "IMPORT FAILED" in line and PACK_FOLDER_NAME in line]
    assert not failed, failed
