"""The pack loads in real ComfyUI and its nodes are published correctly (issue 2)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from lcm_lora_pack.devkit.host import subprocess_env

REPO = Path(__file__).resolve().parents[1]


def test_loader_imports_pack_without_failure(comfy):
    loaded = {Path(p).resolve() for p in comfy.nodes.LOADED_MODULE_DIRS.values()}
    assert REPO in loaded, f"pack not in LOADED_MODULE_DIRS: {comfy.nodes.LOADED_MODULE_DIRS}"
    assert comfy.pack_node_ids(), "no LCMPack_ node registered"


def test_every_node_id_is_prefixed_and_v3(comfy):
    for node_id in comfy.pack_node_ids():
        cls = comfy.node_class(node_id)
        schema = cls.GET_SCHEMA()
        assert schema.node_id == node_id and node_id.startswith("LCMPack_")
        assert schema.category.startswith("LCM-LoRA"), schema.category


def test_single_registration_style():
    """V3 comfy_entrypoint only: a NODE_CLASS_MAPPINGS would make ComfyUI skip the entrypoint."""
    tree = ast.parse((REPO / "__init__.py").read_text())
    names = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    functions = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert "NODE_CLASS_MAPPINGS" not in names
    assert "comfy_entrypoint" in functions


def test_no_pack_node_id_or_display_name_collides_with_core(comfy):
    """On the host under test, core's nodes (every id not loaded from the pack) and the pack's are disjoint by id and
    by display name, so neither hides the other in the node search (0.33 added core ``SamplerLCM``)."""
    mappings, display = comfy.nodes.NODE_CLASS_MAPPINGS, comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS
    ours = set(comfy.pack_node_ids())
    core = {node_id for node_id, cls in mappings.items()
            if "lcm-lora-pack" not in getattr(cls, "RELATIVE_PYTHON_MODULE", "") and node_id not in ours}
    assert ours and len(core) > 100
    pack_entry_ids = {cls.GET_SCHEMA().node_id for cls in _pack_node_classes()}
    assert pack_entry_ids == ours, "a pack node id was taken by another node"
    assert not pack_entry_ids & core
    our_names = {display.get(node_id, node_id).strip().lower() for node_id in ours}
    core_names = {display.get(node_id, node_id).strip().lower() for node_id in core}
    assert not our_names & core_names, sorted(our_names & core_names)


def _pack_node_classes() -> list:
    """The node classes the pack's own entry point declares (not what ComfyUI kept of them)."""
    import asyncio
    import importlib

    package = importlib.import_module("lcm_lora_pack")
    extension = asyncio.run(package.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def _pure_modules() -> list[str]:
    """Every module of samplers/ and lora/ except the declared ComfyUI bridges (``comfy_*.py``)."""
    return [f"lcm_lora_pack.{package}.{path.stem}" for package in ("samplers", "lora")
            for path in sorted((REPO / package).glob("*.py"))
            if path.stem != "__init__" and not path.stem.startswith("comfy_")]


def test_math_packages_import_without_comfy():
    import subprocess
    import sys

    modules = _pure_modules()
    assert "lcm_lora_pack.samplers.timesteps" in modules and "lcm_lora_pack.lora.io" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'nodes', 'server'))\n"
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0, result.stderr


def test_pure_packages_import_neither_each_other_nor_the_host_layer():
    """docs/architecture.md: lora/ and samplers/ sit on one floor with no import between them; host/ is above."""
    forbidden = {"lora": ("samplers", "host", "nodes"), "samplers": ("lora", "host", "nodes")}
    offenders = []
    for package, others in forbidden.items():
        for path in sorted((REPO / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level >= 2 and (node.module or "").split(".")[0] in others:
                    offenders.append(f"{package}/{path.name}: from {'.' * node.level}{node.module}")
    assert not offenders, offenders


@pytest.mark.server
def test_object_info_lists_every_pack_node(comfy_server, comfy):
    info = comfy_server.get_json("/object_info")
    expected = comfy.pack_node_ids()
    assert expected
    for node_id in expected:
        assert node_id in info, f"{node_id} missing from /object_info"
        entry = info[node_id]
        assert entry["category"].startswith("LCM-LoRA")
        assert entry["output"], f"{node_id} has no outputs"
        assert entry["description"], f"{node_id} has no description"
        for section in ("required", "optional"):
            for name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
