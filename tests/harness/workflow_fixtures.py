"""Session fixtures for the example-workflow tests (workflows, server, browser): one set of generated models,
one ComfyUI server with the test-only nodes, shared by every module that imports these fixtures.

Test modules do ``from harness.workflow_fixtures import example_models, workflow_server``.
pytest registers an imported fixture once per module, so the objects themselves are cached here: every
module gets the same models folder and the same server process.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from lcm_lora_pack.devkit import workflows
from lcm_lora_pack.devkit.server import ComfyServer

from . import browser

_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def example_models(tmp_path_factory, model_store) -> Path:
    """A ``models`` folder with a tiny stand-in under every published name the examples use."""
    if "models" not in _SHARED:
        root = tmp_path_factory.mktemp("example-models")
        _SHARED["models"] = workflows.write_example_models(
            root, sd15_checkpoint=model_store / "checkpoints" / "tiny-sd15.safetensors")
    return _SHARED["models"]


@pytest.fixture(scope="session")
def workflow_server(tmp_path_factory, example_models):
    """A real ComfyUI server on 127.0.0.1 with the pack, the test-only nodes and the example models."""
    if "server" not in _SHARED:
        base = tmp_path_factory.mktemp("workflow-server")
        server = ComfyServer(base=base, model_store=example_models)
        workflows.link_testkit(server.base)
        workflows.write_example_input(server.base / "input")
        browser.write_frontend_settings(server.base)
        server.start()
        _SHARED["server"] = server
        _SHARED["object_info"] = server.get_json("/object_info")
    yield _SHARED["server"]
    _SHARED["server"].stop()


@pytest.fixture(scope="session")
def live_object_info(workflow_server) -> dict:
    """``GET /object_info`` of the workflow server (fetched once)."""
    return _SHARED["object_info"]
