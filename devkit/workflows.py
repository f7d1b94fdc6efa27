"""The pack's example workflows as test and demo material: published model names, generated stand-ins,
UI → API conversion against a node catalogue (``/object_info``), and the one test-only substitution.

Shared by the tests (tests/test_workflows*.py, tests/test_server*.py, tests/test_browser*.py) and by
``scripts/run_examples.py`` (the README's main job).

Model names. The workflows in ``example_workflows/`` name the files users really have (``PUBLISHED_MODELS``,
documented in docs/workflows.md with where to get them). On generated models, :func:`write_example_models`
writes tiny stand-ins *under those same names*, so a workflow runs unchanged -- with one exception: a real
SDXL text encoder pair is too big for CI, so :func:`substitute_api` / :func:`substitute_ui` swap the
``CheckpointLoaderSimple`` that loads ``sd_xl_base_1.0.safetensors`` for the test-only
``LCMPackTest_TinySDXLCheckpointLoader`` (same input, same outputs; devkit/tiny_sdxl.py). That table
(:data:`GENERATED_LOADER_SWAPS`) and the latent size (:data:`GENERATED_LATENT_SIZE`: 64 px instead of 512 or
1024, to keep CPU runs short) are the only changes made to a shipped workflow before it runs on generated
models. On the user's own models (``--models``) nothing is changed.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import accelerators
from . import models as tiny_models
from . import tiny_sdxl
from .host import REPO

LOG = logging.getLogger(__name__)

EXAMPLES_DIR = REPO / "example_workflows"
API_DIR = EXAMPLES_DIR / "api"
TESTKIT_DIR = Path(__file__).resolve().parent / "testkit"
TESTKIT_FOLDER_NAME = "lcmpack-testkit"
TESTKIT_LOADER = "LCMPackTest_TinySDXLCheckpointLoader"
EXAMPLE_INPUT_IMAGE = "example.png"
UI_ONLY_NODE_TYPES = frozenset({"Note", "MarkdownNote", "PrimitiveNode", "Reroute"})
GENERATED_MODELS_VERSION = "3"
GENERATED_LATENT_SIZE = 64
LATENT_SIZE_NODES = {"EmptyLatentImage": ("width", "height")}
# Batch (AnimateDiff: frame count) at most this on generated models: AnimateLCM's 16 frames on the SD1.5-layout
# stand-in took ~2 min a run on the CPU; 4 frames still give the motion module frames to mix.
GENERATED_MAX_BATCH = 4
BATCH_NODES = {"EmptyLatentImage": ("batch_size", 2)}  # input name, index in the UI widgets


@dataclass(frozen=True)
class PublishedModel:
    """A model file the example workflows refer to by its published (or conventionally renamed) name."""

    name: str
    folder: str
    source: str
    url: str
    family: str
    note: str = ""


def accelerator_file(name: str, family: str) -> PublishedModel:
    """A file of an accelerator record's downloads (``accelerators.records.Download``), by the name the workflows use
    (its ``save_as`` where the published name is generic): the registry is the one source of where users get it."""
    for record in accelerators.records():
        for download in record.downloads:
            if download.name == name:
                published = download.file.rsplit("/", 1)[-1]
                note = (f"published as {published}: save it under this name" if download.save_as else
                        f"the published {record.title} file; recognised by its name")
                return PublishedModel(name, download.directory, download.repo, download.url, family, note)
    raise KeyError(f"no accelerator record publishes {name!r} (accelerators/registry.py downloads)")


PUBLISHED_MODELS: dict[str, PublishedModel] = {m.name: m for m in (
    PublishedModel("v1-5-pruned-emaonly.safetensors", "checkpoints", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                   "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
                   "v1-5-pruned-emaonly.safetensors", "sd1.5"),
    PublishedModel("sd_xl_base_1.0.safetensors", "checkpoints", "stabilityai/stable-diffusion-xl-base-1.0",
                   "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                   "sd_xl_base_1.0.safetensors", "sdxl"),
    accelerator_file("lcm-lora-sdv1-5.safetensors", "sd1.5"),
    accelerator_file("lcm-lora-sdxl.safetensors", "sdxl"),
    PublishedModel("papercut.safetensors", "loras", "TheLastBen/Papercut_SDXL",
                   "https://huggingface.co/TheLastBen/Papercut_SDXL/resolve/main/papercut.safetensors", "sdxl",
                   "the style LoRA of the LCM-LoRA report's mixing example (weights 1.0 / 0.8)"),
    accelerator_file("TCD-SD15-LoRA.safetensors", "sd1.5"),
    accelerator_file("Hyper-SDXL-8steps-lora.safetensors", "sdxl"),
    accelerator_file("sdxl_lightning_4step_lora.safetensors", "sdxl"),
    accelerator_file("dmd2_sdxl_4step_lora_fp16.safetensors", "sdxl"),
    PublishedModel("control_v11p_sd15_canny_fp16.safetensors", "controlnet",
                   "comfyanonymous/ControlNet-v1-1_fp16_safetensors",
                   "https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
                   "control_v11p_sd15_canny_fp16.safetensors", "sd1.5",
                   "ControlNet 1.1 canny (lllyasviel) as fp16 safetensors; any SD1.5 ControlNet works"),
    PublishedModel("ip-adapter_sd15.safetensors", "ipadapter", "h94/IP-Adapter",
                   "https://huggingface.co/h94/IP-Adapter/resolve/main/models/ip-adapter_sd15.safetensors", "sd1.5",
                   "the basic SD1.5 IP-Adapter (ComfyUI_IPAdapter_plus's README)"),
    PublishedModel("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision", "h94/IP-Adapter",
                   "https://huggingface.co/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors", "sd1.5",
                   "published as model.safetensors: save it under this name (ComfyUI_IPAdapter_plus's README)"),
    accelerator_file("AnimateLCM_sd15_t2v_lora.safetensors", "sd1.5"),
    accelerator_file("AnimateLCM_sd15_t2v.ckpt", "sd1.5"),
)}

# Third-party packs an example workflow needs, by the node-type prefixes they register (``packs_needed``).
THIRD_PARTY_PACKS = {"ComfyUI-AnimateDiff-Evolved": ("ADE_",), "ComfyUI_IPAdapter_plus": ("IPAdapter",)}

# On generated models only: (class_type, widget/input name, file name) -> test-only class_type.
GENERATED_LOADER_SWAPS = {
    ("CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors"): TESTKIT_LOADER,
}


# ---------------------------------------------------------------------------------------------------------
# Example files
# ---------------------------------------------------------------------------------------------------------

def example_names() -> list[str]:
    """Stems of the UI-format workflows in ``example_workflows/`` (what the template browser lists)."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def packs_needed(name: str) -> list[str]:
    """The third-party packs (:data:`THIRD_PARTY_PACKS`) whose node types the workflow ``name`` uses."""
    types = {node["type"] for node in load_ui(name)["nodes"]}
    return [pack for pack, prefixes in THIRD_PARTY_PACKS.items()
            if any(t.startswith(prefixes) for t in types)]


def core_example_names() -> list[str]:
    """The examples that run on ComfyUI with the pack alone."""
    return [name for name in example_names() if not packs_needed(name)]


def third_party_example_names() -> list[str]:
    """The examples that need a third-party pack (IP-Adapter plus, AnimateDiff-Evolved)."""
    return [name for name in example_names() if packs_needed(name)]


def third_party_folder() -> Path:
    """Where unmodified copies of the third-party packs are: ``$LCMPACK_THIRD_PARTY_NODES``, default
    ``../shared/custom_nodes`` beside the repository."""
    return Path(os.environ.get("LCMPACK_THIRD_PARTY_NODES") or REPO.parent / "shared" / "custom_nodes")


def install_third_party_packs(base: Path, packs=tuple(THIRD_PARTY_PACKS)) -> list[str]:
    """Copy the ``packs`` found in :func:`third_party_folder` into ``base/custom_nodes`` (before ComfyUI boots
    from it); the names of those missing there."""
    source, missing = third_party_folder(), []
    for name in packs:
        if not (source / name / "__init__.py").is_file():
            missing.append(name)
            continue
        target = base / "custom_nodes" / name
        if not target.exists():
            shutil.copytree(source / name, target, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    return missing


def load_ui(name: str) -> dict:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def referenced_models(ui_or_api: dict) -> set[str]:
    """Published model names a workflow refers to (any widget value equal to a known file name)."""
    values: list[Any] = []
    if "nodes" in ui_or_api:
        for node in ui_or_api["nodes"]:
            values.extend(node.get("widgets_values") or [])
    else:
        for node in ui_or_api.values():
            values.extend(node.get("inputs", {}).values())
    return {v for v in values if isinstance(v, str) and v in PUBLISHED_MODELS}


# ---------------------------------------------------------------------------------------------------------
# Conversion UI -> API
# ---------------------------------------------------------------------------------------------------------

class ConversionError(AssertionError):
    """A UI workflow could not be converted completely (unknown node type or a node the converter dropped)."""


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to an API prompt with comfy-cli's converter, strictly.

    comfy-cli logs and *skips* a node it cannot convert; here every executable node must come out, and every
    node type must be known to ``object_info`` (a workflow naming an unregistered node id fails here).
    """
    from comfy_cli.workflow_to_api import convert_ui_to_api

    nodes = [n for n in workflow["nodes"] if n.get("type") not in UI_ONLY_NODE_TYPES and n.get("mode", 0) == 0]
    unknown = sorted({n["type"] for n in nodes if n["type"] not in object_info})
    if unknown:
        raise ConversionError(f"node types not registered on this ComfyUI: {unknown}")
    prompt = convert_ui_to_api(workflow, object_info)
    missing = sorted(str(n["id"]) for n in nodes if str(n["id"]) not in prompt)
    if missing:
        raise ConversionError(f"comfy-cli dropped nodes {missing} while converting")
    return prompt


def object_info_in_process(nodes_module, node_types: set[str] | None = None) -> dict:
    """``/object_info`` computed in-process, the way server.py's ``node_info`` builds it (V3 and V1 nodes)."""
    mappings = nodes_module.NODE_CLASS_MAPPINGS
    info: dict[str, dict] = {}
    for node_type in sorted(node_types or mappings):
        if node_type not in mappings:
            continue
        cls = mappings[node_type]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            info[node_type] = cls.GET_NODE_INFO_V1()
            continue
        inputs = cls.INPUT_TYPES()
        info[node_type] = {
            "input": inputs, "input_order": {k: list(v.keys()) for k, v in inputs.items()},
            "output": list(cls.RETURN_TYPES), "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
            "name": node_type, "display_name": nodes_module.NODE_DISPLAY_NAME_MAPPINGS.get(node_type, node_type),
            "description": getattr(cls, "DESCRIPTION", ""), "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return info


# ---------------------------------------------------------------------------------------------------------
# The test-only substitution (generated models only)
# ---------------------------------------------------------------------------------------------------------

def substitute_api(prompt: dict) -> dict:
    """A copy of ``prompt`` for generated models: :data:`GENERATED_LOADER_SWAPS` (class_type only),
    :data:`GENERATED_LATENT_SIZE` and :data:`GENERATED_MAX_BATCH`."""
    out = copy.deepcopy(prompt)
    for node in out.values():
        for name in LATENT_SIZE_NODES.get(node.get("class_type"), ()):
            node["inputs"][name] = GENERATED_LATENT_SIZE
        batch = BATCH_NODES.get(node.get("class_type"))
        if batch and isinstance(node["inputs"].get(batch[0]), int):
            node["inputs"][batch[0]] = min(node["inputs"][batch[0]], GENERATED_MAX_BATCH)
        for (class_type, input_name, file_name), replacement in GENERATED_LOADER_SWAPS.items():
            if node.get("class_type") == class_type and node.get("inputs", {}).get(input_name) == file_name:
                node["class_type"] = replacement
    return out


def substitute_ui(workflow: dict) -> dict:
    """A copy of a UI workflow for generated models (the changes of :func:`substitute_api`).

    Latent sizes are the first widgets of ``EmptyLatentImage`` (width, height), the batch its third."""
    out = copy.deepcopy(workflow)
    for node in out["nodes"]:
        for index, _name in enumerate(LATENT_SIZE_NODES.get(node.get("type"), ())):
            node["widgets_values"][index] = GENERATED_LATENT_SIZE
        batch = BATCH_NODES.get(node.get("type"))
        if batch and len(node.get("widgets_values") or ()) > batch[1]:
            node["widgets_values"][batch[1]] = min(node["widgets_values"][batch[1]], GENERATED_MAX_BATCH)
        for (class_type, _input_name, file_name), replacement in GENERATED_LOADER_SWAPS.items():
            if node.get("type") == class_type and (node.get("widgets_values") or [None])[0] == file_name:
                node["type"] = replacement
                node.setdefault("properties", {})["Node name for S&R"] = replacement
    return out


# ---------------------------------------------------------------------------------------------------------
# Generated stand-ins under the published names
# ---------------------------------------------------------------------------------------------------------

def _lora_specs() -> dict[str, dict]:
    sd15, sdxl = tiny_models.SD15_UNET_CONFIG, tiny_sdxl.TINY_SDXL_UNET_CONFIG
    return {
        "lcm-lora-sdv1-5.safetensors": {"config": sd15, "seed": 11, "kind": "lcm", "rank": 8},
        "lcm-lora-sdxl.safetensors": {"config": sdxl, "seed": 12, "kind": "lcm", "rank": 8},
        "papercut.safetensors": {"config": sdxl, "seed": 13, "kind": None, "rank": 4},
        "TCD-SD15-LoRA.safetensors": {"config": sd15, "seed": 14, "kind": "tcd", "rank": 8},
        # Named as published, no kind metadata: the loader recognises them by their file names.
        "Hyper-SDXL-8steps-lora.safetensors": {"config": sdxl, "seed": 15, "kind": None, "rank": 8},
        "sdxl_lightning_4step_lora.safetensors": {"config": sdxl, "seed": 16, "kind": None, "rank": 8},
        "dmd2_sdxl_4step_lora_fp16.safetensors": {"config": sdxl, "seed": 17, "kind": None, "rank": 8},
    }


def core_example_models() -> list[PublishedModel]:
    """The files the examples that need no third-party pack read (:func:`core_example_names`)."""
    names = set().union(*(referenced_models(load_ui(name)) for name in core_example_names()))
    return [model for name, model in PUBLISHED_MODELS.items() if name in names]


def write_example_models(models_root: Path, sd15_checkpoint: Path | None = None) -> Path:
    """Write tiny stand-ins for every file of :func:`core_example_models` into a ComfyUI ``models`` folder (the
    third-party workflows' files -- an SD1.5-layout checkpoint, a ViT-L, a motion module: 3 GB -- are the tests'
    own, tests/harness/packs_fixtures.py).

    ``sd15_checkpoint``: an existing tiny SD1.5 checkpoint to link instead of generating one. Reuses what a
    previous call wrote (stamp file), so a second call is instant.
    """
    from .compose_models import write_sd15_controlnet
    from .loras import make_kohya_lora

    stamp = models_root / ".lcmpack-generated"
    if stamp.exists() and stamp.read_text().strip() == GENERATED_MODELS_VERSION and all(
            (models_root / m.folder / m.name).exists() for m in core_example_models()):
        return models_root
    checkpoints = models_root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    sd15 = checkpoints / "v1-5-pruned-emaonly.safetensors"
    if not sd15.exists():
        if sd15_checkpoint is not None:
            sd15.symlink_to(sd15_checkpoint.resolve())
        else:
            tiny_models.write_sd15_checkpoint(sd15, seed=0)
    sdxl = checkpoints / "sd_xl_base_1.0.safetensors"
    if not sdxl.exists():
        tiny_sdxl.write_tiny_sdxl_checkpoint(sdxl, seed=1)
    for name, spec in _lora_specs().items():
        target = models_root / "loras" / name
        if not target.exists():
            make_kohya_lora(spec["config"], target, rank=spec["rank"], seed=spec["seed"], kind=spec["kind"])
    controlnet = models_root / "controlnet" / "control_v11p_sd15_canny_fp16.safetensors"
    if not controlnet.exists():
        write_sd15_controlnet(controlnet)  # of the tiny SD1.5 family (devkit/compose_models.py)
    stamp.write_text(GENERATED_MODELS_VERSION + "\n")
    return models_root


def write_example_input(input_dir: Path) -> Path:
    """The examples' input image (``example.png``, as in ComfyUI's own ``input/``): a colour gradient with a white
    disc (edges for the ControlNet example's canny)."""
    from PIL import Image, ImageDraw

    input_dir.mkdir(parents=True, exist_ok=True)
    path = input_dir / EXAMPLE_INPUT_IMAGE
    if not path.exists():
        image = Image.new("RGB", (64, 64))
        image.putdata([(4 * x, 4 * y, 255 - 2 * (x + y)) for y in range(64) for x in range(64)])
        ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(255, 255, 255))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
        image.save(tmp)
        os.replace(tmp, path)
    return path


def link_models(models_root: Path, base: Path) -> None:
    """Link every file of ``models_root/<folder>/`` into ``base/models/<folder>/`` (existing names kept)."""
    for folder in models_root.iterdir():
        if not folder.is_dir():
            continue
        for file in folder.iterdir():
            target = base / "models" / folder.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() and not target.is_symlink():
                target.symlink_to(file.resolve())


# ---------------------------------------------------------------------------------------------------------
# The test-only node folder
# ---------------------------------------------------------------------------------------------------------

def link_testkit(base: Path) -> Path:
    """Put the test-only node folder into ``base/custom_nodes`` (before a server or host boots from it)."""
    link = base / "custom_nodes" / TESTKIT_FOLDER_NAME
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(TESTKIT_DIR, target_is_directory=True)
    return link


def copy_outputs(images: list[dict], output_dir: Path, into: Path, prefix: str) -> list[Path]:
    """Copy SaveImage results (``{filename, subfolder, type}``) out of ComfyUI's output folder."""
    into.mkdir(parents=True, exist_ok=True)
    copied = []
    for image in images:
        source = output_dir / image.get("subfolder", "") / image["filename"]
        target = into / f"{prefix}{image['filename']}"
        shutil.copyfile(source, target)
        copied.append(target)
    return copied
