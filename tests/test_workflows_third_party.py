"""The example workflows that need a third-party pack (issue 24): IP-Adapter (ComfyUI_IPAdapter_plus) and AnimateLCM
(AnimateDiff-Evolved) with the LCM-LoRA, on a real ComfyUI server that loads unmodified copies of those packs.

Models: their published names hold the tests' stand-ins (``harness/packs_fixtures.py``: ``packs_example_models``):
an SD1.5-layout checkpoint that a motion module fits, its LCM-LoRA and AnimateLCM LoRA, a ViT-L/14 CLIP vision model,
a tiny-family IP-Adapter and an AnimateLCM-format motion module saved as the published ``.ckpt``. Latents are 64 px
(``devkit.workflows.substitute_api``, as for every example).

For each: the API twin equals the UI file's conversion against this server's ``/object_info``; it validates, runs
and saves its images (AnimateLCM: its 16 frames capped at ``GENERATED_MAX_BATCH``); its component takes effect (the sampled latent differs from the
same workflow with the IP-Adapter / the motion module's ``Use Evolved Sampling`` bypassed); and, in headless
Chromium, the shipped file drops onto the frontend with every node type registered (the packs' nodes included) and
its generated-models copy runs from the Run button.

Skips where the packs are not in ``$LCMPACK_THIRD_PARTY_NODES`` (default ``../shared/custom_nodes``), fails there
with ``LCMPACK_REQUIRE_THIRD_PARTY=1`` (CI).
"""
from __future__ import annotations

import pytest
from harness import browser
from harness.compose_fixtures import compose_models_dir  # noqa: F401
from harness.packs_fixtures import packs_example_models, packs_models_dir, packs_workflow_server  # noqa: F401
from harness.workflow_fixtures import (
    COMPONENTS,
    bypassed,
    moved,
    run_saving_latents,
    sampled,
    screenshots,  # noqa: F401
)
from lcm_lora_pack.devkit import workflows

NAMES = workflows.third_party_example_names()
FRAMES = {"sd15_animatelcm": workflows.GENERATED_MAX_BATCH}  # images per SaveImage (16 frames, capped for the CPU)

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def object_info(packs_workflow_server) -> dict:  # noqa: F811
    return packs_workflow_server.get_json("/object_info")


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_equals_conversion_with_the_packs_loaded(name, object_info):
    converted = workflows.ui_to_api(workflows.load_ui(name), object_info)
    assert converted == workflows.load_api(name), (
        f"example_workflows/api/{name}.json drifted from the UI file: run scripts/build_example_workflows.py")


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_and_its_component_takes_effect(name, packs_workflow_server):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(name))
    history, full = run_saving_latents(packs_workflow_server, prompt)
    images = [image for output in history["outputs"].values() for image in output.get("images", [])]
    assert len(images) == FRAMES.get(name, 1), history["outputs"]
    _, without = run_saving_latents(packs_workflow_server, bypassed(prompt, name))
    assert moved(sampled(full, prompt), sampled(without, prompt)), f"{name}: {COMPONENTS[name][0]} changed nothing"


@pytest.fixture(scope="module")
def frontend(packs_workflow_server):  # noqa: F811
    page = browser.open_frontend(packs_workflow_server.url)
    yield page
    page.close()


@pytest.mark.browser
@pytest.mark.parametrize("name", NAMES)
def test_dropped_workflow_shows_the_packs_nodes_runs_and_shows_its_image(
        name, frontend, packs_workflow_server, screenshots):  # noqa: F811
    browser.drop_run_and_screenshot(frontend, packs_workflow_server.base, name, screenshots)
