"""Issue 29 item 0 through a real ComfyUI server (``main.py``, CPU): with ComfyUI's default allocator setting
(``PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync``, which ``cuda_malloc.py`` sets for CUDA builds of torch and
which is set here for any build) the real-time nodes never capture: the job gives the eager graph's image, the
server log names the allocator and the flag that enables the captured path, and the server lives on.

The GPU proof (every mode, every allocator / VRAM configuration) is bench/device/bench_server_realtime.py
(BENCHMARKS.md section 11).
"""
from __future__ import annotations

import pytest
from conftest import SD15_CKPT
from lcm_lora_pack.devkit.server import ComfyServer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_store):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTORCH_CUDA_ALLOC_CONF", "backend:cudaMallocAsync")
        instance = ComfyServer(base=tmp_path_factory.mktemp("malloc-async-base"), model_store=model_store)
        instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def _graph(seed: int, fast: bool) -> dict:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "2": {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {"model": ["1", 0], "original_inference_steps": 50,
                                                                   "timestep_scaling": 10.0, "sigma_data": 0.5}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "7": {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "model": ["6", 0] if fast else ["2", 0], "positive": ["3", 0], "negative": ["4", 0],
            "latent_image": ["5", 0], "seed": seed, "steps": 4, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3,
            "denoise": 1.0}},
        "8": ({"class_type": "LCMPack_FastVAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2],
                                                                 "mode": "compile_cuda_graph"}}
              if fast else {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}}),
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    if fast:
        prompt["6"] = {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": ["2", 0],
                                                                         "mode": "compile_cuda_graph"}}
    return prompt


def _image(server: ComfyServer, prompt: dict) -> bytes:
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    entry = server.wait_history(body["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    (image,) = entry["outputs"]["9"]["images"]
    status, data = server.request(f"/view?filename={image['filename']}&subfolder={image['subfolder']}"
                                  f"&type={image['type']}")
    assert status == 200
    return data


def test_real_time_nodes_fall_back_under_cuda_malloc_async_and_the_server_lives(server):
    from io import BytesIO

    import numpy as np
    from PIL import Image

    def pixels(data: bytes):
        return np.asarray(Image.open(BytesIO(data)).convert("RGB"))

    for seed in (1, 2):
        eager, fast = _image(server, _graph(seed, fast=False)), _image(server, _graph(seed, fast=True))
        assert np.array_equal(pixels(fast), pixels(eager)), f"seed {seed}"
    assert server.process.poll() is None and server.get_json("/system_stats")
    log = server.log_path.read_text(errors="replace")
    assert "LCM fast path: running eager ComfyUI sampling: PyTorch's CUDA allocator is cudaMallocAsync" in log
    assert "LCM fast decode: running ComfyUI's VAE.decode: PyTorch's CUDA allocator is cudaMallocAsync" in log
    assert "--disable-cuda-malloc" in log and "capture (" not in log
