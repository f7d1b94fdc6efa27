"""Issue #6 on a real ComfyUI server (127.0.0.1, HTTP + websocket): the API workflows run through the documented
automation example (``scripts/automation_example.py``, run as a user runs it: its own process, exit status 0
only after ``execution_success``), the template browser lists the pack's workflows, bad input is rejected with
ComfyUI's normal errors and the server keeps serving.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.workflow_fixtures import example_models, workflow_server  # noqa: F401
from lcm_lora_pack.devkit import workflows
from PIL import Image

AUTOMATION_SCRIPT = workflows.REPO / "scripts" / "automation_example.py"

pytestmark = pytest.mark.server
NAMES = workflows.example_names()
CORE_NAMES = workflows.core_example_names()  # this server has no third-party packs
MAIN = "sd15_lcm_lora_4step"
PACK = "lcm-lora-pack"


def _export_targets_removed(server, prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "LCMPack_LoraExport":
            (server.base / "models" / "loras" / f"{node['inputs']['filename']}.safetensors").unlink(missing_ok=True)


def _automate(server, prompt: dict, tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """Run the automation example on ``prompt``; returns the finished process and the images it downloaded."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(prompt))
    out = tmp_path / "images"
    done = subprocess.run([sys.executable, str(AUTOMATION_SCRIPT), str(workflow), "--server", server.url,
                           "--out", str(out), *options], capture_output=True, text=True, timeout=900)
    return done, sorted(out.glob("*.png"))


def _find(prompt: dict, input_name: str) -> str:
    return next(key for key, node in prompt.items() if input_name in node["inputs"])


def test_workflow_templates_lists_and_serves_the_pack_templates(workflow_server):  # noqa: F811
    listed = workflow_server.get_json("/workflow_templates")
    assert sorted(listed.get(PACK, [])) == NAMES
    for name in NAMES:
        status, body = workflow_server.request(f"/api/workflow_templates/{PACK}/{name}.json")
        assert status == 200 and json.loads(body) == workflows.load_ui(name)
        status, body = workflow_server.request(f"/api/workflow_templates/{PACK}/{name}.jpg")
        assert status == 200 and Image.open(io.BytesIO(body)).format == "JPEG"


@pytest.mark.parametrize("name", CORE_NAMES)
def test_api_workflow_runs_over_http_and_websocket(name, workflow_server, tmp_path):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(name))
    _export_targets_removed(workflow_server, prompt)
    done, images = _automate(workflow_server, prompt, tmp_path, "--timeout", "600")
    assert done.returncode == 0, done.stderr[-3000:]
    savers = [node for node in prompt.values() if node["class_type"] == "SaveImage"]
    assert len(images) == len(savers)
    for path in images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[1] == workflows.GENERATED_LATENT_SIZE


def _rejected(server, prompt: dict) -> dict:
    status, payload = server.post_prompt(prompt)
    assert status == 400, f"accepted: {payload}"
    assert payload["node_errors"], payload
    return payload


@pytest.mark.parametrize("input_name, missing", [("lora_name", "lcm-lora-missing.safetensors"),
                                                 ("ckpt_name", "missing-checkpoint.safetensors")])
def test_missing_model_file_fails_validation_naming_the_file(input_name, missing, workflow_server):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(MAIN))
    key = _find(prompt, input_name)
    prompt[key]["inputs"][input_name] = missing
    payload = _rejected(workflow_server, prompt)
    errors = payload["node_errors"][key]["errors"]
    assert errors[0]["type"] in ("value_not_in_list", "custom_validation_failed")
    assert missing in errors[0]["details"] and input_name in errors[0]["details"]


def test_wrongly_typed_link_is_rejected_with_node_errors(workflow_server):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(MAIN))
    sampler = _find(prompt, "latent_image")
    prompt[sampler]["inputs"]["model"] = [_find(prompt, "ckpt_name"), 1]  # a CLIP into a MODEL input
    payload = _rejected(workflow_server, prompt)
    errors = payload["node_errors"][sampler]["errors"]
    assert [e["type"] for e in errors] == ["return_type_mismatch"]
    assert "CLIP" in errors[0]["details"] and "MODEL" in errors[0]["details"]


def test_wrongly_typed_value_is_rejected_with_node_errors(workflow_server):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(MAIN))
    sampler = _find(prompt, "latent_image")
    prompt[sampler]["inputs"]["steps"] = "four"
    payload = _rejected(workflow_server, prompt)
    assert "four" in json.dumps(payload["node_errors"][sampler]["errors"])


def test_server_keeps_serving_after_bad_input(workflow_server, tmp_path):  # noqa: F811
    broken = workflows.substitute_api(workflows.load_api(MAIN))
    broken[_find(broken, "lora_name")]["inputs"]["lora_name"] = "nope.safetensors"
    _rejected(workflow_server, broken)
    status, _ = workflow_server.request("/prompt", {"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert status == 400
    assert workflow_server.get_json("/system_stats")["system"]
    good = workflows.substitute_api(workflows.load_api(MAIN))
    done, images = _automate(workflow_server, good, tmp_path)
    assert done.returncode == 0 and images, done.stderr[-3000:]


def test_automation_example_command_line(workflow_server, tmp_path):  # noqa: F811
    done, images = _automate(workflow_server, workflows.substitute_api(workflows.load_api(MAIN)), tmp_path / "good",
                             "--seed", "7", "--prompt", "a red fox, watercolor")
    assert done.returncode == 0 and len(images) == 1, done.stderr[-3000:]
    assert "step 4/4" in done.stderr and "done: 1 image(s)" in done.stderr
    prompt = workflows.substitute_api(workflows.load_api(MAIN))
    prompt[_find(prompt, "lora_name")]["inputs"]["lora_name"] = "typo.safetensors"
    done, images = _automate(workflow_server, prompt, tmp_path / "typo")
    assert done.returncode == 1 and not images
    assert "typo.safetensors" in done.stderr
