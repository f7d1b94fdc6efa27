"""Session fixtures for the example-workflow tests (workflows, server, browser): one set of generated models,
one ComfyUI server with the test-only nodes, shared by every module that imports these fixtures.

Test modules do ``from harness.workflow_fixtures import example_models, workflow_server``.
pytest registers an imported fixture once per module, so the objects themselves are cached here: every
module gets the same models folder and the same server process.
"""
from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path

import pytest
import torch
from lcm_lora_pack.devkit import workflows
from lcm_lora_pack.devkit.server import ComfyServer

from . import browser
from .compose_fixtures import execution_errors, latents_of, run

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
def screenshots(tmp_path_factory) -> Path:
    """Where the browser tests put their screenshots: ``$LCMPACK_SCREENSHOTS`` (scripts/publish_screenshots.py turns
    them into the thumbnails and docs/images), default a temporary folder."""
    folder = Path(os.environ.get("LCMPACK_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def live_object_info(workflow_server) -> dict:
    """``GET /object_info`` of the workflow server (fetched once)."""
    return _SHARED["object_info"]


# ---------------------------------------------------------------------------------------------------------
# The composition examples (issue 24): each adds one component to the LCM-LoRA graph
# ---------------------------------------------------------------------------------------------------------

# workflow -> (the component's node type, the input ComfyUI's Bypass passes through in place of each output slot)
COMPONENTS = {"sd15_lcm_controlnet": ("ControlNetApplyAdvanced", ("positive", "negative")),
              "sd15_lcm_ipadapter": ("IPAdapterAdvanced", ("model",)),
              "sd15_animatelcm": ("ADE_UseEvolvedSampling", ("model",)),
              "sd15_lcm_inpaint": ("SetLatentNoiseMask", ("samples",))}
LATENT_SOURCES = ("LCMPack_KSamplerLCM", "VAEEncode")  # whose outputs the component tests compare


def bypassed(prompt: dict, name: str) -> dict:
    """A copy of the API ``prompt`` of composition example ``name`` without its component: every link from the
    component's output slot k goes to what fed its input ``passes[k]`` instead (what ComfyUI's Bypass does)."""
    class_type, passes = COMPONENTS[name]
    out = copy.deepcopy(prompt)
    component = next(key for key, node in out.items() if node["class_type"] == class_type)
    removed = out.pop(component)
    for node in out.values():
        for input_name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] == component:
                node["inputs"][input_name] = removed["inputs"][passes[value[1]]]
    return out


def run_saving_latents(server, prompt: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """Run ``prompt`` with a ``SaveLatent`` on every :data:`LATENT_SOURCES` node (under a new prefix each run, so
    ComfyUI's cache never skips one); the history entry and the latents by source node id."""
    graph, run_id = copy.deepcopy(prompt), uuid.uuid4().hex[:8]
    for key in [k for k, node in prompt.items() if node["class_type"] in LATENT_SOURCES]:
        graph[f"latent_{key}"] = {"class_type": "SaveLatent",
                                  "inputs": {"samples": [key, 0], "filename_prefix": f"latents/{key}_{run_id}"}}
    history = run(server, graph)
    errors = execution_errors(history)
    assert history["status"]["status_str"] == "success" and not errors, (
        errors[0]["exception_message"] if errors else history["status"])
    return history, {key.removeprefix("latent_"): value for key, value in latents_of(server, history).items()}


def sampled(latents: dict[str, torch.Tensor], prompt: dict) -> torch.Tensor:
    """The latent ``KSampler (LCM)`` sampled (the one sampler of a composition example)."""
    (key,) = [k for k, node in prompt.items() if node["class_type"] == "LCMPack_KSamplerLCM"]
    return latents[key]


def moved(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` differs from ``b`` by more than float rounding (the same graph runs bit-identically on the CPU)."""
    return bool((a - b).abs().max() > 1e-3 * b.abs().max())
