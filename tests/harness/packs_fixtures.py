"""A real ComfyUI server with the pack *and* the two third-party packs users combine the LCM-LoRA with (issue 24):
AnimateDiff-Evolved and ComfyUI_IPAdapter_plus, unmodified copies from ``$LCMPACK_THIRD_PARTY_NODES`` (default
``../shared/custom_nodes`` beside the repository, read-only: they are copied into the server's ``custom_nodes``;
``devkit.workflows.install_third_party_packs``).

Where that folder is missing the tests skip with the reason, unless ``LCMPACK_REQUIRE_THIRD_PARTY=1`` (then they
fail): a run that is meant to cover composition sets it.

Models: everything of ``compose_models_dir`` (the tiny SD1.5 checkpoint, its ControlNet, the LCM-LoRA, the style
LoRA) plus, for AnimateDiff, an SD1.5 checkpoint with SD1.5's block layout and an AnimateLCM-format motion module
(``devkit/animatediff_models.py`` says why the tiny UNet cannot carry one), with an LCM-LoRA and a style LoRA of
that UNet and an AnimateLCM LoRA (under its published name); for IP-Adapter, a ViT-L/14 CLIP vision model and an
IP-Adapter of the tiny SD1.5 family (``devkit/ipadapter_models.py``). The third-party example workflows get those
files under their published names (:func:`packs_example_models`) and a server of their own.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from lcm_lora_pack.devkit import animatediff_models, ipadapter_models, workflows
from lcm_lora_pack.devkit import workflow_specs as specs
from lcm_lora_pack.devkit.loras import make_kohya_lora
from lcm_lora_pack.devkit.server import ComfyServer

from harness import browser
from harness.compose_fixtures import _SHARED, _write_images

PACKS = ("ComfyUI-AnimateDiff-Evolved", "ComfyUI_IPAdapter_plus")
AD_CKPT = "sd15-layout-ad.safetensors"
MOTION_MODULE = "animatelcm-sd15-tiny.safetensors"
AD_LCM_LORA = "lcm-lora-sdv1-5-ad.safetensors"
AD_STYLE_LORA = "style-sd15-ad.safetensors"
ANIMATELCM_LORA = "AnimateLCM_sd15_t2v_lora.safetensors"  # the published name: the pack detects its kind by it
CLIP_VISION = "clip-vision-vit-l-14.safetensors"
IPADAPTER = "ip-adapter-tiny-sd15.safetensors"
FRAMES = 2  # the batch is the video: ADE's motion module attends across it


def third_party_nodes() -> Path:
    """The folder holding the third-party packs, or skip (fail with ``LCMPACK_REQUIRE_THIRD_PARTY=1``)."""
    folder = workflows.third_party_folder()
    missing = [name for name in PACKS if not (folder / name / "__init__.py").is_file()]
    if missing:
        message = (f"third-party packs {missing} not in {folder}; set LCMPACK_THIRD_PARTY_NODES to a folder with "
                   "unmodified copies (docs/composition.md)")
        if os.environ.get("LCMPACK_REQUIRE_THIRD_PARTY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def packs_models_dir(tmp_path_factory, compose_models_dir) -> Path:
    """``compose_models_dir``'s files (linked) plus the AnimateDiff checkpoint, motion module and their LoRAs."""
    if "packs_models" not in _SHARED:
        third_party_nodes()
        root = tmp_path_factory.mktemp("packs-models")
        for kind in compose_models_dir.iterdir():
            (root / kind.name).mkdir()
            for file in kind.iterdir():
                (root / kind.name / file.name).symlink_to(file.resolve())
        plain = compose_models_dir.joinpath("checkpoints", "tiny-sd15.safetensors").resolve()
        animatediff_models.write_ad_checkpoint(root / "checkpoints" / AD_CKPT, plain)
        animatediff_models.write_animatelcm_motion_module(root / "animatediff_models" / MOTION_MODULE)
        config = animatediff_models.AD_UNET_CONFIG
        make_kohya_lora(config, root / "loras" / AD_LCM_LORA, rank=8, seed=12, kind="lcm", targets="lcm-full")
        make_kohya_lora(config, root / "loras" / AD_STYLE_LORA, rank=4, seed=22)
        make_kohya_lora(config, root / "loras" / ANIMATELCM_LORA, rank=8, seed=13, targets="lcm-full")
        ipadapter_models.write_clip_vision_vitl(root / "clip_vision" / CLIP_VISION)
        ipadapter_models.write_ipadapter_sd15(root / "ipadapter" / IPADAPTER)
        _SHARED["packs_models"] = root
    return _SHARED["packs_models"]


def start_packs_server(tmp_path_factory, models: Path, label: str) -> ComfyServer:
    """A real ComfyUI server (fp32) on ``models`` with the pack, the test-only nodes, copies of the third-party
    packs, the composition tests' input images and the examples' ``example.png``."""
    third_party_nodes()
    server = ComfyServer(base=tmp_path_factory.mktemp(label), model_store=models, extra_args=("--force-fp32",))
    assert workflows.install_third_party_packs(server.base, PACKS) == []
    workflows.link_testkit(server.base)
    _write_images(server.base / "input")
    workflows.write_example_input(server.base / "input")
    browser.write_frontend_settings(server.base)
    server.start()
    return server


@pytest.fixture(scope="module")
def packs_server(tmp_path_factory, packs_models_dir):
    """A real ComfyUI server with the composition models and the third-party packs.

    One per test module, stopped when the module ends: with the AnimateDiff models it holds ~5 GB, which the rest
    of the suite (its own servers, the main job) needs back on a 24 GiB machine."""
    if "packs_server" not in _SHARED:
        _SHARED["packs_server"] = start_packs_server(tmp_path_factory, packs_models_dir, "packs-server")
    yield _SHARED["packs_server"]
    _SHARED.pop("packs_server").stop()


@pytest.fixture(scope="session")
def packs_example_models(tmp_path_factory, packs_models_dir) -> Path:
    """The third-party example workflows' files under their published names (docs/workflows.md): the SD1.5 stand-in
    is the SD1.5-layout checkpoint a motion module fits (``devkit/animatediff_models.py``), the LCM-LoRA and the
    AnimateLCM LoRA are of its UNet, the CLIP vision model is the ViT-L/14 (core builds a ViT-H at full size: 632 M
    parameters) and the IP-Adapter the one of ``devkit/ipadapter_models.py``; the motion module is written as the
    published ``.ckpt``."""
    if "packs_example_models" not in _SHARED:
        root = tmp_path_factory.mktemp("packs-example-models")
        links = {f"checkpoints/{specs.SD15}": f"checkpoints/{AD_CKPT}",
                 f"loras/{specs.LCM_SD15}": f"loras/{AD_LCM_LORA}",
                 f"loras/{specs.ANIMATELCM_LORA}": f"loras/{ANIMATELCM_LORA}",
                 f"clip_vision/{specs.CLIP_VISION_H}": f"clip_vision/{CLIP_VISION}",
                 f"ipadapter/{specs.IPADAPTER_SD15}": f"ipadapter/{IPADAPTER}"}
        for name, source in links.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to((packs_models_dir / source).resolve())
        animatediff_models.write_animatelcm_motion_module(root / "animatediff_models" / specs.ANIMATELCM_MOTION)
        _SHARED["packs_example_models"] = root
    return _SHARED["packs_example_models"]


@pytest.fixture(scope="module")
def packs_workflow_server(tmp_path_factory, packs_example_models):
    """A real ComfyUI server with the third-party packs and :func:`packs_example_models` (one per module, as
    :func:`packs_server`)."""
    if "packs_workflow_server" not in _SHARED:
        _SHARED["packs_workflow_server"] = start_packs_server(tmp_path_factory, packs_example_models,
                                                              "packs-workflow-server")
    yield _SHARED["packs_workflow_server"]
    _SHARED.pop("packs_workflow_server").stop()
