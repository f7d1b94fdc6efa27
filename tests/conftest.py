"""Shared fixtures: real ComfyUI in-process, a real ComfyUI server, generated models (cached per run).

Tests import the pack as ``lcm_lora_pack`` (``.pack`` is on pytest's ``pythonpath``) and the shared host and
model builders from ``lcm_lora_pack.devkit``; pack *nodes* are only reached through ComfyUI (its node
registry), never imported. ComfyUI's root goes on ``sys.path`` here, once, for tests that use ``comfy.*``
directly (:func:`lcm_lora_pack.devkit.host.prepare_import`; :func:`boot` does the rest in the ``comfy`` fixture).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `.pack/lcm_lora_pack` links to this repository: the package name tests import the pack under (made by
# scripts/provision.py; made here too for a checkout that was never provisioned, e.g. a git worktree).
_IMPORT_LINK = REPO / ".pack" / "lcm_lora_pack"
if not _IMPORT_LINK.is_symlink():
    _IMPORT_LINK.parent.mkdir(exist_ok=True)
    _IMPORT_LINK.symlink_to("..", target_is_directory=True)
    importlib.invalidate_caches()

from lcm_lora_pack.devkit import family_models, host, models, workflows  # noqa: E402  (after the link exists)
from lcm_lora_pack.devkit.server import ComfyServer  # noqa: E402

host.prepare_import()

SD15_CKPT = "tiny-sd15.safetensors"
VEGA_UNET = "tiny-vega-sdxl.safetensors"


def img2img_nodes(image: str, text: str) -> dict:
    """API-format nodes "1"–"5" of an SD1.5 img2img graph: checkpoint, positive ``text`` and negative "blurry",
    ``LoadImage`` of ``image`` (in the input folder), ``VAEEncode`` (the latent is ["5", 0])."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": image}},
        "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
    }


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """A ``models`` folder with generated SD1.5-family and SDXL-family models, built once per run."""
    root = tmp_path_factory.mktemp("generated-models")
    models.write_sd15_checkpoint(root / "checkpoints" / SD15_CKPT, seed=0)
    models.write_vega_diffusion_model(root / "diffusion_models" / VEGA_UNET, seed=1)
    (root / "loras").mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, model_store) -> host.ComfyHost:
    """ComfyUI booted in this process with the pack and the test-only nodes (devkit/testkit) registered
    and the generated models visible."""
    base = tmp_path_factory.mktemp("comfy-base")
    host.make_base_directory(base)
    workflows.link_testkit(base)
    for kind in ("checkpoints", "diffusion_models"):
        for file in (model_store / kind).iterdir():
            (base / "models" / kind / file.name).symlink_to(file)
    return host.boot(base)


@pytest.fixture
def comfy_loras(comfy) -> Path:
    """The in-process host's ``models/loras`` folder (tests drop generated LoRA files here)."""
    return comfy.base / "models" / "loras"


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, model_store):
    """A real ComfyUI HTTP server on 127.0.0.1 (free port) with the pack and the generated models."""
    base = tmp_path_factory.mktemp("server-base")
    server = ComfyServer(base=base, model_store=model_store)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def family_model(comfy):
    """``load(family)``: the family's tiny model (FLUX.1, SD3, Qwen-Image, Wan; devkit/family_models.py), written
    into the host's models/diffusion_models and loaded by core's UNETLoader (cached per module: Qwen-Image and
    0.3.75's FLUX are ~0.4-0.5 G parameters)."""
    folder = comfy.base / "models" / "diffusion_models"
    loaded: dict[str, object] = {}

    def load(family: str):
        if family not in loaded:
            path = family_models.write_family_model(family, folder, seed=len(loaded) + 3)
            loaded[family] = comfy.run_node("UNETLoader", unet_name=path.name, weight_dtype="default")[0]
        return loaded[family]

    yield load
    loaded.clear()


@pytest.fixture(scope="module")
def demo_host(comfy):
    """The in-process ComfyUI with the shipped demo family installed in its models folder (models/demo)."""
    from lcm_lora_pack.demo import files

    files.install(comfy.base / "models")
    return comfy


@pytest.fixture(scope="module")
def demo_checkpoint(demo_host):
    """``(MODEL, CLIP, VAE)`` of the demo checkpoint through core's ``CheckpointLoaderSimple``."""
    from lcm_lora_pack.demo import files

    return demo_host.run_node("CheckpointLoaderSimple", ckpt_name=files.CHECKPOINT)
