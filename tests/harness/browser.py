"""Drive the real ComfyUI frontend (``comfyui-frontend-package``) in headless Chromium the way a user does.

Debian's ``chromium`` (installed by .ci/system-deps) is driven by Playwright with ``executable_path``;
Playwright's own browser downloads are never used. A workflow is loaded by dropping its JSON file on the
graph canvas (a ``drop`` event with a ``DataTransfer`` holding a ``File``: the frontend's own file-drop
handler runs), queued with the **Run** button, and the result is awaited as the image shown in the
``SaveImage`` node.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger(__name__)

CHROMIUM = Path(os.environ.get("LCMPACK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1920, "height": 1080}
# Stored as the server's user settings before it starts: no first-run template dialog, no minimap,
# node text drawn at every zoom (screenshots stay readable).
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                     "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.InstalledVersion": "1.32.9"}
INIT_SCRIPT = "localStorage.setItem('vueNodesBannerDismissed', 'true');"

DROP_FILE_JS = """([text, name]) => {
    const file = new File([text], name, {type: 'application/json'});
    const transfer = new DataTransfer();
    transfer.items.add(file);
    const canvas = document.querySelector('#graph-canvas');
    for (const type of ['dragenter', 'dragover', 'drop']) {
        canvas.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }
}"""
GRAPH_STATE_JS = """() => ({
    nodes: app.graph.nodes.map(n => ({id: n.id, type: n.type, errors: !!n.has_errors,
                                       registered: !!LiteGraph.registered_node_types[n.type]})),
    dialogs: Array.from(document.querySelectorAll('[role=dialog]')).map(d => d.innerText.trim()),
    // Frontends >= 1.49 report missing nodes in a banner, not a dialog: the visible lines that say so.
    notices: document.body.innerText.split('\\n').map(l => l.trim()).filter(l => /^missing node/i.test(l)),
    nodeErrors: app.lastNodeErrors || {},
    executionError: app.lastExecutionError ? JSON.stringify(app.lastExecutionError) : null,
})"""
IMAGES_SHOWN_JS = """(types) => app.graph.nodes.filter(n => types.includes(n.type)).every(
    n => n.imgs && n.imgs.length > 0 && n.imgs.every(img => img.complete && img.naturalWidth > 0))"""
GRAPH_BOUNDS_JS = """() => {
    const ds = app.canvas.ds, title = LiteGraph.NODE_TITLE_HEIGHT;
    let box = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of app.graph.nodes) {
        const [x, y] = n.pos, [w, h] = n.size;
        box = [Math.min(box[0], x), Math.min(box[1], y - title), Math.max(box[2], x + w), Math.max(box[3], y + h)];
    }
    const s = ds.scale, [ox, oy] = ds.offset;
    return [(box[0] + ox) * s, (box[1] + oy) * s, (box[2] + ox) * s, (box[3] + oy) * s];
}"""
ERROR_WORDS = ("missing", "failed", "error", "not found", "invalid")


class FrontendReportedError(AssertionError):
    """The frontend showed a problem: missing node types, a dialog, validation or execution errors."""


@dataclass
class LoadReport:
    node_types: list[str]
    unregistered: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def write_frontend_settings(base: Path) -> None:
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(FRONTEND_SETTINGS, indent=2))


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


class Frontend:
    """One headless Chromium page on a ComfyUI server's frontend."""

    def __init__(self, url: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                        headless=True)
        context = self.browser.new_context(viewport=VIEWPORT)
        context.add_init_script(INIT_SCRIPT)
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.goto(url)
        self.page.wait_for_function("() => window.app && app.graph && app.canvas && window.LiteGraph",
                                    timeout=120_000)
        self.page.wait_for_timeout(1000)

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def state(self) -> dict:
        return self.page.evaluate(GRAPH_STATE_JS)

    def close_dialogs(self) -> None:
        for attempt in range(4):
            if not self.state()["dialogs"]:
                return
            if attempt < 2:
                self.page.keyboard.press("Escape")
            else:  # a dialog that ignores Escape: its close button
                self.page.get_by_role("dialog").get_by_role("button", name="Close").first.click(force=True)
            self.page.wait_for_timeout(500)

    def drop_workflow(self, workflow: dict, file_name: str, settle_ms: int = 1500) -> LoadReport:
        """Drop a workflow file on the canvas; report what the frontend says (raises nothing)."""
        self.close_dialogs()
        expected = len(workflow["nodes"])
        self.page.evaluate(DROP_FILE_JS, [json.dumps(workflow), file_name])
        self.page.wait_for_function(f"() => app.graph.nodes.length === {expected}", timeout=30_000)
        self.page.wait_for_timeout(settle_ms)
        state = self.state()
        types = [n["type"] for n in state["nodes"]]
        unregistered = sorted({n["type"] for n in state["nodes"] if n["errors"] or not n["registered"]})
        return LoadReport(types, unregistered, state["dialogs"])

    def load_checked(self, workflow: dict, file_name: str) -> LoadReport:
        """Drop a workflow and fail on missing node types or any dialog the frontend opened."""
        report = self.drop_workflow(workflow, file_name)
        if report.unregistered or report.dialogs:
            raise FrontendReportedError(f"{file_name}: missing node types {report.unregistered}; "
                                        f"dialogs: {report.dialogs}")
        return report

    def open_template_browser(self, pack_folder: str) -> str:
        """Open the sidebar's template browser on the pack's section (Extensions → pack); return its text."""
        self.close_dialogs()
        self.page.get_by_role("button", name="Templates").first.click()
        dialog = self.page.get_by_role("dialog")
        dialog.get_by_text("All Templates").first.wait_for(timeout=30_000)
        self.page.wait_for_timeout(1000)  # the dialog's opening animation
        section = dialog.get_by_text(pack_folder, exact=True).first
        section.scroll_into_view_if_needed()
        section.click(force=True)
        dialog.get_by_text("Showing").first.wait_for(timeout=30_000)
        self.page.wait_for_timeout(1000)
        return dialog.inner_text()

    def open_template(self, name: str, expected_nodes: int) -> LoadReport:
        """Click a template's card in the open template browser; report what the frontend loaded."""
        self.page.get_by_role("dialog").get_by_text(name, exact=True).first.click()
        self.page.wait_for_function(f"() => app.graph.nodes.length === {expected_nodes}", timeout=30_000)
        self.page.wait_for_timeout(1500)
        state = self.state()
        unregistered = sorted({n["type"] for n in state["nodes"] if n["errors"] or not n["registered"]})
        return LoadReport([n["type"] for n in state["nodes"]], unregistered, state["dialogs"])

    def open_node_help(self, node_type: str, sentinel: str, timeout_ms: int = 30_000) -> str:
        """Select the first ``node_type`` node, press the selection toolbox's Info button (the frontend's node help
        panel: it fetches the pack's ``docs/<node id>.md``) and return the panel's text once ``sentinel`` shows."""
        self.close_dialogs()
        self.page.evaluate("""(type) => {
            const node = app.graph.nodes.find(n => n.type === type);
            app.canvas.deselectAll(); app.canvas.selectNode(node); app.canvas.setDirty(true, true);
        }""", node_type)
        # The selection toolbox floats over the canvas and keeps moving while the canvas redraws, so Playwright never
        # sees it "stable": the click is dispatched to the button itself (its own Vue handler runs).
        button = self.page.locator('[data-testid="info-button"]').first
        button.wait_for(state="attached", timeout=timeout_ms)
        button.dispatch_event("click")
        panel = self.page.locator(".node-help-content").first
        panel.get_by_text(sentinel).first.wait_for(timeout=timeout_ms)
        return panel.inner_text()

    def fit_view(self) -> None:
        self.page.get_by_role("button", name="Fit View").click()
        self.page.wait_for_timeout(500)

    def screenshot_canvas(self, path: Path, margin: int = 24) -> Path:
        """Screenshot of the graph: the nodes' bounding box on screen (after :meth:`fit_view`), plus a margin."""
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas = self.page.locator("#graph-canvas").bounding_box()
        x0, y0, x1, y1 = self.page.evaluate(GRAPH_BOUNDS_JS)
        left, top = max(canvas["x"], canvas["x"] + x0 - margin), max(canvas["y"], canvas["y"] + y0 - margin)
        right = min(canvas["x"] + canvas["width"], canvas["x"] + x1 + margin)
        bottom = min(canvas["y"] + canvas["height"], canvas["y"] + y1 + margin)
        self.page.screenshot(path=str(path), clip={"x": left, "y": top, "width": right - left, "height": bottom - top})
        return path

    def run_and_wait(self, image_node_types: list[str], timeout_s: float = 300) -> dict:
        """Press Run; wait until the prompt finished and every image node shows its image.

        Fails on validation errors, execution errors or an error dialog. Returns the prompt's history entry.
        """
        before = set(self._fetch("/api/history"))
        self._run_button().click()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            if state["nodeErrors"] or state["executionError"]:
                raise FrontendReportedError(f"validation/execution errors: {state['nodeErrors']} "
                                            f"{state['executionError']}")
            bad = [d for d in state["dialogs"] if any(w in d.lower() for w in ERROR_WORDS)]
            if bad:
                raise FrontendReportedError(f"error dialog: {bad}")
            finished = {k: v for k, v in self._fetch("/api/history").items() if k not in before}
            if finished and self.page.evaluate(IMAGES_SHOWN_JS, image_node_types):
                entry = next(iter(finished.values()))
                if entry["status"]["status_str"] != "success":
                    raise FrontendReportedError(f"prompt failed: {entry['status']}")
                return entry
            self.page.wait_for_timeout(500)
        raise FrontendReportedError(f"no output image after {timeout_s} s; console: {self.console[-10:]}")

    def _run_button(self):
        """The frontend's Run (queue) button: its test id where the frontend has one (1.49 adds a second button
        named "Run", the queue-mode menu), else the one button named Run (older frontends)."""
        queue = self.page.get_by_test_id("queue-button")
        if queue.count():
            return queue.first
        return self.page.get_by_role("button", name="Run", exact=True)

    def _fetch(self, path: str):
        return self.page.evaluate("(path) => fetch(path).then(r => r.json())", path)


def open_frontend(url: str) -> Frontend:
    """A :class:`Frontend` on ``url``; skips where Chromium is missing, fails there with ``LCMPACK_REQUIRE_BROWSER``."""
    import pytest

    if not chromium_available():
        if os.environ.get("LCMPACK_REQUIRE_BROWSER"):
            pytest.fail(f"LCMPACK_REQUIRE_BROWSER is set but {CHROMIUM} is missing: run .ci/system-deps")
        pytest.skip(f"{CHROMIUM} not installed (run .ci/system-deps)")
    return Frontend(url)


def drop_run_and_screenshot(frontend: Frontend, server_base: Path, name: str, screenshots: Path) -> None:
    """The shipped example ``name`` dropped on the canvas loads with every node type registered and no dialog
    (screenshot ``NAME.png``); its generated-models copy (``devkit.workflows.substitute_ui``) queued with Run shows
    an image in every ``SaveImage`` node, one per saver and frame (screenshot ``NAME-result.png``)."""
    from lcm_lora_pack.devkit import workflows

    shipped = workflows.load_ui(name)
    report = frontend.load_checked(shipped, f"{name}.json")
    assert sorted(report.node_types) == sorted(n["type"] for n in shipped["nodes"])
    frontend.fit_view()
    frontend.screenshot_canvas(screenshots / f"{name}.png")

    runnable = workflows.substitute_ui(shipped)
    for node in runnable["nodes"]:
        if node["type"] == "LCMPack_LoraExport":  # the export never overwrites: start from no file
            (server_base / "models" / "loras" / f"{node['widgets_values'][0]}.safetensors").unlink(missing_ok=True)
    frontend.load_checked(runnable, f"{name}.json")
    frontend.fit_view()
    entry = frontend.run_and_wait(["SaveImage"])
    frontend.screenshot_canvas(screenshots / f"{name}-result.png")
    savers = [n["id"] for n in runnable["nodes"] if n["type"] == "SaveImage"]  # none in the LoRA export
    assert all(entry["outputs"].get(str(saver), {}).get("images") for saver in savers), entry["outputs"]
