"""The Distill LCM-LoRA node through a real ComfyUI server (issue 22 items 1 and 7 and the shared-model item): the
image-folder mode trains under the server's inference mode, ``data_dir`` is confined to ComfyUI's input folder,
and a run that ends early leaves the checkpoint's model sampling the same image."""
from __future__ import annotations

import os
import time
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


def _sampling_graph(seed: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red cube"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": 2, "cfg": 2.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["3", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


def _cached(history: dict) -> set[str]:
    return {node for event, data in history["status"]["messages"] if event == "execution_cached"
            for node in data["nodes"]}


def _image(server, history: dict) -> bytes:
    assert history["status"]["status_str"] == "success", history["status"]
    assert "5" not in _cached(history), "the sampler did not run"
    (image,) = history["outputs"]["7"]["images"]
    return (server.base / "output" / image["subfolder"] / image["filename"]).read_bytes()


def test_a_run_that_ends_early_leaves_the_checkpoint_sampling_the_same_image(comfy_server):
    """ComfyUI hands the distill node the MODEL object every other graph of the checkpoint gets (the loader's
    output is cached). Sample with it; run a distillation that trains and is interrupted (``POST /interrupt``
    once its first checkpoint is written); sample again: the bytes equal those of the same graph on a freshly
    loaded checkpoint (``POST /free`` resets the caches after the next prompt)."""
    server = comfy_server
    _image(server, _run(server, _sampling_graph(1, "same_model")))  # the model in use, as a user's would be
    name = "interrupted_lcm"
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
             "2": {"class_type": NODE, "inputs": {"model": ["1", 0], "clip": ["1", 1], "output_name": name,
                                                  "data_dir": "", "prompts": "a cube\na red ball",
                                                  **(TINY | {"max_train_steps": 100_000, "checkpointing_steps": 1,
                                                             "gradient_checkpointing": True})}}}
    status, answer = server.post_prompt(graph)
    assert status == 200, answer
    checkpoint = server.base / "user" / "__lcmpack_distill" / name / "checkpoint-1.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.is_file(), server.log_tail()
    assert server.request("/interrupt", {}, method="POST")[0] == 200
    history = server.wait_history(answer["prompt_id"])
    assert any(event == "execution_interrupted" for event, _ in history["status"]["messages"]), history["status"]
    assert not (server.base / "models" / "loras" / f"{name}.safetensors").exists()

    after = _image(server, _run(server, _sampling_graph(2, "same_model")))
    # /free: the worker drops its caches and models at its next turn (before or after the next prompt)
    assert server.request("/free", {"free_memory": True, "unload_models": True}, method="POST")[0] == 200
    flush = _run(server, _sampling_graph(3, "flush"))
    fresh = _run(server, _sampling_graph(2, "same_model"))
    assert "1" not in _cached(flush) or "1" not in _cached(fresh), "the checkpoint was not loaded again"
    assert after == _image(server, fresh)
