"""Issue #6 on a real ComfyUI server (127.0.0.1, HTTP + websocket): the API workflows run through the documented
automation example, the template browser lists the pack's workflows, bad input is rejected with ComfyUI's
normal errors and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from harness import workflows
from harness.workflow_fixtures import example_models, workflow_server  # noqa: F401
from PIL import Image

sys.path.insert(0, str(workflows.REPO / "scripts"))
import automation_example  # noqa: E402

pytestmark = pytest.mark.server
NAMES = workflows.example_names()
MAIN = "sd15_lcm_lora_4step"
PACK = "lcm-lora-pack"


def _export_targets_removed(server, prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "LCMPack_LoraExport":
            (server.base / "models" / "loras" / f"{node['inputs']['filename']}.safetensors").unlink(missing_ok=True)


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


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs_over_http_and_websocket(name, workflow_server, tmp_path):  # noqa: F811
    prompt = workflows.substitute_api(workflows.load_api(name))
    _export_targets_removed(workflow_server, prompt)
    result = asyncio.run(automation_example.run_workflow(workflow_server.url, prompt, tmp_path, timeout=600))
    assert "execution_start" in result.events and "execution_success" in result.events
    savers = [node for node in prompt.values() if node["class_type"] == "SaveImage"]
    assert len(result.images) == len(savers)
    for path in result.images:
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
    result = asyncio.run(automation_example.run_workflow(workflow_server.url, good, tmp_path))
    assert result.images and "execution_success" in result.events


def test_automation_example_command_line(workflow_server, tmp_path, caplog):  # noqa: F811
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(workflows.substitute_api(workflows.load_api(MAIN))))
    out = tmp_path / "images"
    caplog.set_level("INFO", logger="automation_example")
    status = automation_example.main([str(workflow), "--server", workflow_server.url, "--out", str(out),
                                      "--seed", "7", "--prompt", "a red fox, watercolor"])
    assert status == 0 and len(list(out.glob("*.png"))) == 1
    assert "step 4/4" in caplog.text and "done: 1 image(s)" in caplog.text
    missing = tmp_path / "missing.json"
    prompt = workflows.substitute_api(workflows.load_api(MAIN))
    prompt[_find(prompt, "lora_name")]["inputs"]["lora_name"] = "typo.safetensors"
    missing.write_text(json.dumps(prompt))
    assert automation_example.main([str(missing), "--server", workflow_server.url, "--out", str(out)]) == 1
    assert "typo.safetensors" in caplog.text
