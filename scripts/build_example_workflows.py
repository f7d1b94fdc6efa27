#!/usr/bin/env python3
"""Build ``example_workflows/*.json`` (UI format) and ``example_workflows/api/*.json`` from devkit/workflow_specs.py.

Boots ComfyUI in-process with the pack and the third-party packs the composition examples use (IPAdapter plus,
AnimateDiff-Evolved: copied from ``$LCMPACK_THIRD_PARTY_NODES``, default ``../shared/custom_nodes``; no models
needed) to read every node's ``/object_info`` entry, so
positional ``widgets_values`` follow the node's real input order (a seed widget is followed by its
``control_after_generate`` value). The API twin is comfy-cli's conversion of the UI file. Run it after
editing a spec or when a node's schema changed::

    PYTHONPATH=.pack .venv/bin/python scripts/build_example_workflows.py            # write
    PYTHONPATH=.pack .venv/bin/python scripts/build_example_workflows.py --check    # exit 1 if a file differs
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import uuid
from pathlib import Path

from lcm_lora_pack.devkit import host as comfy_host
from lcm_lora_pack.devkit import workflows
from lcm_lora_pack.devkit.workflow_specs import Spec, all_specs
from lcm_lora_pack.devkit.workflows import API_DIR, EXAMPLES_DIR, PUBLISHED_MODELS, ui_to_api

REPO = comfy_host.REPO

LOG = logging.getLogger("build_example_workflows")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH, NODE_WIDTH, GAP, TITLE_HEIGHT = 380, 330, 30, 30
FRONTEND_VERSION = "1.32.9"


def is_widget(spec) -> bool:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else None
    options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def ordered_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) in the node's input order, required first."""
    out = []
    for section in ("required", "optional"):
        specs = info["input"].get(section) or {}
        for name in info.get("input_order", {}).get(section, list(specs)):
            out.append((name, specs[name], section == "optional"))
    return out


def default_of(spec) -> object:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], list) and spec[0]:
        return spec[0][0]
    if spec[0] == "COMBO" and options.get("options"):
        return options["options"][0]
    raise KeyError("no default")


def has_control_widget(name: str, spec) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("control_after_generate") is not None:
        return bool(options["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def widget_values(node, info: dict) -> list:
    unknown = set(node.widgets) - {name for name, spec, _ in ordered_inputs(info) if is_widget(spec)}
    if unknown:
        raise KeyError(f"{node.type} has no widget inputs {sorted(unknown)}")
    values = []
    for name, spec, _optional in ordered_inputs(info):
        if not is_widget(spec):
            continue
        values.append(node.widgets[name] if name in node.widgets else default_of(spec))
        if has_control_widget(name, spec):
            values.append("fixed")
        if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("image_upload"):
            values.append("image")  # the frontend's upload-button widget, saved after the file name
    return values


def columns(spec: Spec) -> dict[str, int]:
    """Column of each node = length of its longest upstream chain (a left-to-right layout)."""
    by_key = {n.key: n for n in spec.nodes}
    memo: dict[str, int] = {}

    def depth(key: str) -> int:
        if key not in memo:
            sources = [src for src, _slot in by_key[key].links.values()]
            memo[key] = 1 + max((depth(s) for s in sources), default=-1)
        return memo[key]

    return {key: depth(key) for key in by_key}


def node_height(info: dict, n_widgets: int, sockets: int, multiline: int) -> int:
    rows = max(sockets, len(info["output"]))
    return 12 + 22 * rows + 24 * n_widgets + 100 * multiline


def build_ui(spec: Spec, object_info: dict) -> dict:
    """The UI-format workflow (litegraph dump, version 0.4) of a spec."""
    missing = sorted({n.type for n in spec.nodes if n.type not in object_info})
    if missing:
        raise KeyError(f"{spec.name}: node types not registered: {missing}")
    ids = {node.key: index + 1 for index, node in enumerate(spec.nodes)}
    column_of = columns(spec)
    links: list[list] = []
    ui_nodes = []
    out_links: dict[tuple[str, int], list[int]] = {}
    y_of_column: dict[int, int] = {}
    for order, node in enumerate(sorted(spec.nodes, key=lambda n: (column_of[n.key], ids[n.key]))):
        info = object_info[node.type]
        inputs = []
        for name, input_spec, _optional in ordered_inputs(info):
            if is_widget(input_spec):
                continue
            entry = {"name": name, "type": input_spec[0], "link": None}
            if name in node.links:
                src, slot = node.links[name]
                link_id = len(links) + 1
                links.append([link_id, ids[src], slot, ids[node.key], len(inputs),
                              object_info[spec_node(spec, src).type]["output"][slot]])
                out_links.setdefault((src, slot), []).append(link_id)
                entry["link"] = link_id
            inputs.append(entry)
        unknown_links = set(node.links) - {i["name"] for i in inputs}
        if unknown_links:
            raise KeyError(f"{spec.name}/{node.key}: {node.type} has no socket inputs {sorted(unknown_links)}")
        values = widget_values(node, info)
        multiline = sum(1 for _n, s, _o in ordered_inputs(info)
                        if is_widget(s) and len(s) > 1 and isinstance(s[1], dict) and s[1].get("multiline"))
        n_widgets = len(values)
        height = node_height(info, n_widgets, len(inputs), multiline)
        if node.type in ("SaveImage", "LoadImage"):
            height = max(height, 300)
        column = column_of[node.key]
        y = y_of_column.get(column, 60)
        y_of_column[column] = y + height + TITLE_HEIGHT + GAP
        ui_nodes.append({
            "id": ids[node.key], "type": node.type, "pos": [40 + column * COLUMN_WIDTH, y],
            "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [], "properties": {"Node name for S&R": node.type}, "widgets_values": values,
            **({"title": node.title} if node.title else {}),
        })
    for ui_node, node in zip(sorted(ui_nodes, key=lambda n: n["id"]), spec.nodes, strict=True):
        info = object_info[node.type]
        ui_node["outputs"] = [{"name": name, "type": kind, "slot_index": slot,
                               "links": out_links.get((node.key, slot), [])}
                              for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))]
        models = model_properties(node)
        if models:
            ui_node["properties"]["models"] = models
    ui_nodes.sort(key=lambda n: n["id"])
    ui_nodes.append(note_node(spec, len(ui_nodes) + 1, y_of_column))
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"lcm-lora-pack/{spec.name}")), "revision": 0,
        "last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
        "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [20, 20]}, "frontendVersion": FRONTEND_VERSION},
        "version": 0.4,
    }


def spec_node(spec: Spec, key: str):
    return next(n for n in spec.nodes if n.key == key)


def model_properties(node) -> list[dict]:
    """``properties.models`` (name, url, directory: the frontend's ``zModelFile``): the frontend offers these
    downloads when a file is missing. The accelerators' entries come from the registry's downloads
    (``devkit.workflows.accelerator_file``). ``name`` is the name the workflow uses: the frontend saves the download
    under it (its desktop download's ``filename``, the browser link's ``download`` attribute), also where the
    published file is generic (``pytorch_lora_weights.safetensors``); the About note says to save it under that
    name where a browser keeps the server's name.
    """
    out = []
    for value in node.widgets.values():
        model = PUBLISHED_MODELS.get(value) if isinstance(value, str) else None
        if model is not None:
            out.append({"name": model.name, "url": model.url + "?download=true", "directory": model.folder})
    return out


def note_node(spec: Spec, node_id: int, y_of_column: dict[int, int]) -> dict:
    """A MarkdownNote telling the user what the workflow does and which files it needs from where."""
    used = [m for m in PUBLISHED_MODELS.values()
            if any(m.name == v for n in spec.nodes for v in n.widgets.values())]
    lines = [f"### {spec.title}", "", spec.description, "", "**Models** (put them in ComfyUI/models/…):", ""]
    lines += [f"- `{m.folder}/{m.name}` from [{m.source}]({m.url.split('/resolve/')[0]})"
              + (f" ({m.note})" if m.note else "") for m in used]
    return {"id": node_id, "type": "MarkdownNote", "pos": [40, max(y_of_column.get(0, 60), 60)],
            "size": [NODE_WIDTH, 60 + 22 * len(lines)], "flags": {}, "order": node_id - 1, "mode": 0,
            "inputs": [], "outputs": [], "title": "About this workflow", "properties": {},
            "widgets_values": ["\n".join(lines)], "color": "#432", "bgcolor": "#653"}


def boot_object_info() -> dict:
    base = Path(tempfile.mkdtemp(prefix="lcmpack-build-"))
    missing = workflows.install_third_party_packs(base)
    if missing:
        LOG.warning("third-party packs %s not in %s: the workflows using them cannot be built",
                    missing, workflows.third_party_folder())
    host = comfy_host.boot(base)
    return workflows.object_info_in_process(host.nodes)


def render(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    parser.add_argument("--skip-missing", action="store_true",
                        help="build only the workflows whose node types are all registered (say which are not)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[build] %(message)s")
    LOG.setLevel(logging.INFO)

    object_info = boot_object_info()
    stale = []
    for spec in all_specs():
        try:
            ui = build_ui(spec, object_info)
        except KeyError as error:
            if not options.skip_missing:
                raise
            LOG.warning("skipped %s", error)
            continue
        files = {EXAMPLES_DIR / f"{spec.name}.json": render(ui),
                 API_DIR / f"{spec.name}.json": render(ui_to_api(ui, object_info))}
        for path, text in files.items():
            if path.exists() and path.read_text() == text:
                continue
            stale.append(path)
            if not options.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                LOG.info("wrote %s", path.relative_to(REPO))
    if options.check and stale:
        LOG.error("out of date: %s (run scripts/build_example_workflows.py)", [str(p.relative_to(REPO)) for p in stale])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
