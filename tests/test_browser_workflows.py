"""Issue #8: drag-and-drop in the real ComfyUI frontend, in headless Chromium, for every example workflow.

For each workflow (the ones needing a third-party pack: tests/test_workflows_third_party.py, on a server with
those packs): the shipped file is dropped on the canvas (the frontend must report no missing node types
and open no dialog: no missing nodes, no missing models) and screenshotted; then its generated-models copy
(harness/workflows.py: the SDXL loader swap and 64 px latents) is dropped, queued with the Run button, and
the test waits for the output image in the SaveImage node (validation or execution errors fail it).
The template browser (sidebar → Templates → Extensions → lcm-lora-pack) must list every workflow and
open one cleanly.
A deliberately broken copy naming a node id the pack does not register must fail the same check.

Screenshots go to ``$LCMPACK_SCREENSHOTS`` (default: a pytest temporary folder);
``scripts/publish_screenshots.py`` turns them into docs/images/ and the templates' thumbnails.
Runs when /usr/bin/chromium exists; with ``LCMPACK_REQUIRE_BROWSER=1`` (CI) a missing browser is a failure.
"""
from __future__ import annotations

import pytest
from harness import browser
from harness.workflow_fixtures import example_models, screenshots, workflow_server  # noqa: F401
from lcm_lora_pack.devkit import workflows

NAMES = workflows.core_example_names()  # the third-party ones: tests/test_workflows_third_party.py
ALL_NAMES = workflows.example_names()  # the template browser lists every file, whatever is installed
BROKEN_SOURCE = "sd15_lcm_lora_4step"
UNREGISTERED = "LCMPack_NoSuchNode"
TEMPLATE_SECTION = "lcm-lora-pack"  # the pack's folder name in custom_nodes

pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.fixture(scope="module")
def frontend(workflow_server):  # noqa: F811
    """One browser for this module. Module scope, not session: Playwright's sync API keeps an event loop
    running in this thread while it lives, and later tests call asyncio.run()."""
    page = browser.open_frontend(workflow_server.url)
    yield page
    page.close()


@pytest.mark.parametrize("name", NAMES)
def test_dropped_workflow_loads_clean_runs_and_shows_its_image(name, frontend, workflow_server,  # noqa: F811
                                                               screenshots):  # noqa: F811
    browser.drop_run_and_screenshot(frontend, workflow_server.base, name, screenshots)


def test_templates_open_from_the_template_browser(frontend, screenshots):  # noqa: F811
    try:
        text = frontend.open_template_browser(TEMPLATE_SECTION)
        for name in ALL_NAMES:
            assert name in text, f"{name} not in the template browser"
        frontend.page.screenshot(path=str(screenshots / "template_browser.png"))
        shipped = workflows.load_ui(BROKEN_SOURCE)
        report = frontend.open_template(BROKEN_SOURCE, len(shipped["nodes"]))
    finally:
        frontend.close_dialogs()
    assert sorted(report.node_types) == sorted(n["type"] for n in shipped["nodes"])
    assert not report.unregistered and not report.dialogs, report


def test_node_help_panel_shows_the_packs_help_page(frontend):
    """The Info button of a selected pack node opens the frontend's help panel with the pack's web/docs page (not
    the fallback the frontend builds from the node's description)."""
    frontend.load_checked(workflows.load_ui(BROKEN_SOURCE), f"{BROKEN_SOURCE}.json")
    try:
        text = frontend.open_node_help("LCMPack_KSamplerLCM", "LCM-LoRA Pack help")
    finally:
        frontend.close_dialogs()
    assert "KSampler (LCM)" in text and "Presets" in text, text


def test_broken_copy_with_unregistered_node_id_fails_the_check(frontend):
    broken = workflows.substitute_ui(workflows.load_ui(BROKEN_SOURCE))
    pack_nodes = [n for n in broken["nodes"] if n["type"].startswith("LCMPack_")]
    assert pack_nodes, f"{BROKEN_SOURCE} uses no pack node"
    pack_nodes[0]["type"] = UNREGISTERED
    with pytest.raises(browser.FrontendReportedError) as failure:
        frontend.load_checked(broken, f"{BROKEN_SOURCE}-broken.json")
    assert UNREGISTERED in str(failure.value)
    state = frontend.state()  # the user is told: a dialog (frontends before 1.49) or a banner (1.49 and later)
    assert any(UNREGISTERED in text and "missing" in text.lower() for text in state["dialogs"] + state["notices"])
    frontend.close_dialogs()


REFRESH_COMBOS_JS = "async () => { await app.refreshComboInNodes(); return true }"


def test_a_missing_accelerator_is_offered_for_download_from_its_registry_record(frontend, workflow_server):  # noqa: F811
    """Getting the file (issue 25): with the LCM-LoRA missing from the server, dropping the shipped workflow makes the
    frontend offer that file's download (the loader node's ``properties.models``, from the registry).

    Frontend 1.32.9 (ComfyUI 0.3.75) checks ``properties.models`` against the server's folder on load and opens its
    Missing Models dialog (``loras / lcm-lora-sdv1-5.safetensors``, Download). 1.49.6 (0.33.0) checks widget values
    against its model lists (refreshed here, as its R key does, after the file went) and lists the file under
    Missing Models in its errors panel ("View details"), with a Download button only where the node carries the
    download metadata."""
    import comfyui_frontend_package

    new_frontend = tuple(int(p) for p in comfyui_frontend_package.__version__.split(".")[:2]) >= (1, 49)
    name = "lcm-lora-sdv1-5.safetensors"
    path = workflow_server.base / "models" / "loras" / name
    aside = path.with_name(f".{name}.aside")
    path.rename(aside)
    try:
        if new_frontend:
            frontend.page.evaluate(REFRESH_COMBOS_JS)
        report = frontend.drop_workflow(workflows.load_ui("sd15_lcm_lora_4step"), "sd15_lcm_lora_4step.json",
                                        settle_ms=3000)
        if new_frontend:
            frontend.page.get_by_text("View details").first.click()
            frontend.page.wait_for_timeout(2000)
            panel = frontend.page.evaluate("() => document.body.innerText")
            buttons = frontend.page.evaluate(
                "() => Array.from(document.querySelectorAll('button')).map(b => b.getAttribute('aria-label') || '')")
    finally:
        aside.rename(path)
        if new_frontend:
            frontend.page.evaluate(REFRESH_COMBOS_JS)
        frontend.close_dialogs()
    if new_frontend:
        missing = panel[panel.find("Missing Models"):]
        assert "Missing Models" in panel and f"{name}\nloras\nDownload" in missing, panel[-1500:]
        assert f"Download {name}" in buttons, buttons
        return
    dialog = next((text for text in report.dialogs if "Missing Models" in text), "")
    assert f"loras / {name}" in dialog and "Download" in dialog, report.dialogs
    assert "v1-5-pruned-emaonly" not in dialog  # the checkpoint is there: only the missing file is listed
