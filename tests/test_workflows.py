"""Issue #6: every shipped example workflow converts against the live ``/object_info``, validates with ComfyUI
(no node_errors) and runs on generated models; API twins equal the converted UI files. The examples that need a
third-party pack (IP-Adapter plus, AnimateDiff-Evolved) run in tests/test_workflows_third_party.py, on a server
with those packs.

Issue 24: each composition example's component (ControlNet, noise mask here; IP-Adapter, AnimateLCM's motion
module there) takes effect: the sampled latent differs from the same workflow with that node bypassed.

Conversion uses comfy-cli's converter (``lcm_lora_pack.devkit.workflows.ui_to_api``, strict: no node may be dropped).
Validation and execution use the shared test server (POST /prompt must answer without node_errors; the history
must report success), whose models folder holds only the generated stand-ins under the published names, with
the documented loader swap for SDXL (devkit/workflows.py). (The in-process host is shared with other tests
that write their own files under the same published names, so it is not used here.)
"""
from __future__ import annotations

import json
import uuid

import pytest
import torch
from harness.workflow_fixtures import (
    COMPONENTS,
    bypassed,
    example_models,  # noqa: F401
    live_object_info,  # noqa: F401
    moved,
    run_saving_latents,
    sampled,
    workflow_server,  # noqa: F401
)
from lcm_lora_pack.devkit import workflow_specs, workflows
from PIL import Image

NAMES = workflows.example_names()
CORE_NAMES = workflows.core_example_names()
EXPORT_NODE = "LCMPack_LoraExport"


def test_examples_are_the_specs_and_each_has_api_twin_and_thumbnail():
    assert NAMES == sorted(spec.name for spec in workflow_specs.all_specs())
    for name in NAMES:
        assert (workflows.API_DIR / f"{name}.json").is_file(), f"{name}: no API twin"
        thumbnail = workflows.EXAMPLES_DIR / f"{name}.jpg"
        assert thumbnail.is_file(), f"{name}: no thumbnail"
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and min(image.size) >= 128


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_names_published_models_only(name):
    ui = workflows.load_ui(name)
    assert ui["version"] == 0.4 and ui["links"] and ui["nodes"]
    used = workflows.referenced_models(ui)
    assert used, f"{name} loads no published model"
    combos = [v for n in ui["nodes"] for v in n.get("widgets_values") or []
              if isinstance(v, str) and v.endswith((".safetensors", ".ckpt"))]
    assert set(combos) <= set(workflows.PUBLISHED_MODELS), f"{name}: unpublished file names {combos}"


def test_third_party_examples_are_the_ipadapter_and_animatelcm_ones():
    assert {name: workflows.packs_needed(name) for name in workflows.third_party_example_names()} == {
        "sd15_animatelcm": ["ComfyUI-AnimateDiff-Evolved"], "sd15_lcm_ipadapter": ["ComfyUI_IPAdapter_plus"]}
    assert set(COMPONENTS) <= set(NAMES)


@pytest.mark.server
@pytest.mark.parametrize("name", CORE_NAMES)
def test_api_twin_equals_conversion_against_live_object_info(name, live_object_info):  # noqa: F811
    converted = workflows.ui_to_api(workflows.load_ui(name), live_object_info)
    assert converted == workflows.load_api(name), (
        f"example_workflows/api/{name}.json drifted from the UI file: run scripts/build_example_workflows.py")


@pytest.mark.server
@pytest.mark.parametrize("name", CORE_NAMES)
def test_ui_workflow_converts_validates_and_runs_on_generated_models(name, workflow_server,  # noqa: F811
                                                                      live_object_info):  # noqa: F811
    prompt = workflows.substitute_api(workflows.ui_to_api(workflows.load_ui(name), live_object_info))
    export_targets = _unique_export_targets(prompt, workflow_server.base)
    status, answer = workflow_server.post_prompt(prompt)
    assert status == 200 and answer.get("node_errors") == {}, f"{name}: ComfyUI validation: {answer}"
    entry = workflow_server.wait_history(answer["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    savers = [k for k, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert len(images) == len(savers), f"{name}: {entry['outputs']}"
    for image in images:
        with Image.open(workflow_server.base / "output" / image.get("subfolder", "") / image["filename"]) as png:
            assert png.size[0] >= workflows.GENERATED_LATENT_SIZE and png.size[1] == workflows.GENERATED_LATENT_SIZE
            assert png.getextrema() != ((0, 0), (0, 0), (0, 0)), "an all-black image"
    for target in export_targets:
        assert target.is_file() and target.stat().st_size > 0, f"{name}: {target} not written"
        header = json.loads(target.read_bytes()[8:8 + int.from_bytes(target.read_bytes()[:8], "little")])
        assert any(key.startswith("lora_unet_") for key in header), f"{target} holds no kohya LoRA keys"


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(set(COMPONENTS) & set(CORE_NAMES)))
def test_composition_workflow_component_takes_effect(name, workflow_server):  # noqa: F811
    """The shipped API twin (on generated models) against the same graph with its ControlNet / noise mask bypassed:
    the sampled latent differs. With the noise mask, the latent outside the mask is the encoded input (core blends
    every prediction with it there, and LCM's result is its last prediction) and inside it is new."""
    prompt = workflows.substitute_api(workflows.load_api(name))
    _, full = run_saving_latents(workflow_server, prompt)
    _, without = run_saving_latents(workflow_server, bypassed(prompt, name))
    assert moved(sampled(full, prompt), sampled(without, prompt)), f"{name}: {COMPONENTS[name][0]} changed nothing"
    if name == "sd15_lcm_inpaint":
        (source,) = [full[k] for k, node in prompt.items() if node["class_type"] == "VAEEncode"]
        result = sampled(full, prompt)
        inside = torch.zeros_like(result, dtype=torch.bool)
        inside[..., 2:6, 2:6] = True  # the 256 px square at (128, 128) of the 512 px mask, on the 8x8 latent
        assert torch.allclose(result[~inside], source[~inside], rtol=0, atol=1e-4 * source.abs().max())
        assert moved(result[inside], source[inside])


def _unique_export_targets(prompt: dict, base) -> list:
    """Give each export node a file name of its own (the node never overwrites, and the shared server caches
    identical prompts); return the files it must write."""
    targets = []
    for node in prompt.values():
        if node["class_type"] == EXPORT_NODE:
            node["inputs"]["filename"] += f"-{uuid.uuid4().hex[:8]}"
            targets.append(base / "models" / "loras" / f"{node['inputs']['filename']}.safetensors")
    return targets


@pytest.mark.parametrize("name", NAMES)
def test_substitution_only_swaps_the_sdxl_loader_latent_size_and_caps_the_batch(name):
    api = workflows.load_api(name)
    substituted = workflows.substitute_api(api)
    for key, node in api.items():
        other = substituted[key]
        if other["class_type"] != node["class_type"]:
            assert (node["class_type"], other["class_type"]) == ("CheckpointLoaderSimple", workflows.TESTKIT_LOADER)
            assert node["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
        changed = {k for k in node["inputs"] if node["inputs"][k] != other["inputs"][k]}
        assert changed <= {"width", "height", "batch_size"}, f"{name}/{key}: {changed}"
        if "batch_size" in changed:
            assert node["inputs"]["batch_size"] > workflows.GENERATED_MAX_BATCH == other["inputs"]["batch_size"]
