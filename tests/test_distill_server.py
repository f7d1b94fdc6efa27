"""The Distill LCM-LoRA node through a real ComfyUI server (issue 22 items 1 and 7): the image-folder mode trains
under the server's inference mode, and ``data_dir`` is confined to ComfyUI's input folder."""
from __future__ import annotations

import os
import urllib.parse

import pytest
from conftest import SD15_CKPT
from test_distill_node import TINY
from test_distill_train import write_images

NODE = "LCMPack_DistillLCMLoRA"
pytestmark = pytest.mark.server


def _graph(output_name: str, data_dir: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "2": {"class_type": NODE, "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                             "output_name": output_name, "data_dir": data_dir, "prompts": "",
                                             **TINY}},
    }


def _run(server, prompt: dict) -> dict:
    status, answer = server.post_prompt(prompt)
    assert status == 200, answer
    return server.wait_history(answer["prompt_id"])


def _error(history: dict) -> dict:
    errors = [data for event, data in history["status"]["messages"] if event == "execution_error"]
    assert errors, history["status"]
    return errors[0]


def test_image_folder_mode_trains_through_the_server(comfy_server):
    write_images(comfy_server.base / "input" / "captioned", count=2)
    history = _run(comfy_server, _graph("served_folder_lcm", "captioned"))
    assert history["status"]["status_str"] == "success", _error(history)
    path = comfy_server.base / "models" / "loras" / "served_folder_lcm.safetensors"
    from lcm_lora_pack.lora.detect import detect_kind
    from lcm_lora_pack.lora.io import read_lora_file

    assert detect_kind(read_lora_file(path))[0] == "lcm"
    # The run's cache and checkpoints are not under the output folder /view serves.
    assert not (comfy_server.base / "output" / "lcm_distill").exists()
    assert (comfy_server.base / "user" / "__lcmpack_distill" / "served_folder_lcm" / "checkpoint-2.pt").is_file()
    status, _ = comfy_server.request("/view?" + urllib.parse.urlencode(
        {"type": "output", "subfolder": "lcm_distill/served_folder_lcm", "filename": "checkpoint-2.pt"}))
    assert status == 404


@pytest.mark.parametrize("given", ["../../../../etc", "~", "/etc", "link_out", "captioned/../../models"])
def test_data_dir_outside_the_input_folder_is_refused(comfy_server, tmp_path, given):
    secret = tmp_path / "secret"
    write_images(secret, count=1)
    (secret / "image_0.txt").unlink()  # an outside folder that would name its files in the caption error
    link = comfy_server.base / "input" / "link_out"
    if link.is_symlink():  # left by an earlier case, whose tmp_path pytest may have removed since
        link.unlink()
    link.symlink_to(secret, target_is_directory=True)
    history = _run(comfy_server, _graph("escape_attempt", given))
    error = _error(history)
    assert error["exception_type"].endswith("DistillDataError"), error
    message = error["exception_message"]
    assert "outside ComfyUI's input folder" in message
    assert repr(given) in message or given in message
    for leaked in ("image_0", str(tmp_path), "/work", str(comfy_server.base), "does not exist"):
        assert leaked not in message, message
    assert not (comfy_server.base / "models" / "loras" / "escape_attempt.safetensors").exists()


def test_missing_folder_inside_input_names_only_the_relative_path(comfy_server):
    history = _run(comfy_server, _graph("missing_data", "no_such_folder"))
    message = _error(history)["exception_message"]
    assert "no_such_folder" in message
    assert str(comfy_server.base) not in message and os.sep + "input" not in message
