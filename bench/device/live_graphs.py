"""The graphs live clients send, for the client-side server bench (issue 23; bench_server_realtime.py ``--graphs``).

* ``lcm`` -- the pack's LCM graph (``LCMLoraLoader`` → ``KSampler (LCM)`` 4 steps cfg 1 → full VAE), 512².
* ``taesd`` -- (a) LCM-LoRA 4-step txt2img 512² decoded by ComfyUI's TAESD (``VAELoader`` "taesd", random weights
  of TAESD's architecture in ``models/vae_approx``).
* ``live`` -- (b) krita-ai-diffusion's default live graph: a Hyper-SD-style LoRA stand-in (core
  ``LoraLoaderModelOnly``), ``ControlNetApplyAdvanced`` (one ControlNet, strength 1, 0–100 %), ``CFGGuider`` cfg
  1.8, ``RandomNoise``, ``KSamplerSelect`` euler, ``BasicScheduler`` sgm_uniform 10 steps + ``SplitSigmas`` 7 (3
  sampled steps, img2img of the canvas sent inline as base64 PNG, as krita's ``ETN_LoadImageBase64``, + ``VAEEncode``), ``SamplerCustomAdvanced``, full VAE; a new seed and a
  new input image each call. ``live-nocn``: the same without the ControlNet.
* ``live-sdxl``, ``live-sdxl-nocn`` -- (c): (b) on SDXL at 1024² (random full-size SDXL checkpoint, LoRA stand-in and
  ControlNet of ``sdxl_live.py``, built by ``--prepare-only`` when an SDXL graph is asked for).
* ``live@SAMPLER``, ``live-nocn@SAMPLER`` (and the SDXL graphs) -- (b) with another sampler of the captured loop in
  ``KSamplerSelect`` (``euler_ancestral``, ``dpmpp_2m``, ``ddim``, ``lcm``).
* ``floor`` -- (b)'s canvas straight to ``PreviewImage``: what a job costs the server and the client with no model
  in it (arm ``eager`` only).

Arms (each graph): ``eager`` (core), ``core_compile`` (core ``TorchCompileModel``, backend ``cudagraphs``, the faster
of core's two in BENCHMARKS.md section 9), ``cuda_graph`` / ``compile_cuda_graph`` (``LCM Fast Path`` in that mode
+ ``VAE Decode (fast)`` in the same mode). The image node is always "9" (the client reads it).
"""
from __future__ import annotations

from pathlib import Path

from lcm_lora_pack.bench.device import sdxl_live

ARMS = ("eager", "core_compile", "cuda_graph", "compile_cuda_graph")
CONTROLNET = "rt-sd15-controlnet.safetensors"
IMAGES = 8  # canvases (a call sends canvas seed % IMAGES: a new one each call)


def side(smoke: bool) -> int:
    return 64 if smoke else 512


def prepare_live(base: Path, smoke: bool, sdxl: bool = False) -> None:
    """TAESD files (random, TAESD's architecture), a ControlNet (smoke: the devkit's tiny one; else a full-size
    random SD1.5 ControlNet in diffusers layout, fp16); ``sdxl``: graph (c)'s models too (``sdxl_live``)."""
    from safetensors.torch import save_file

    approx = base / "models" / "vae_approx"
    approx.mkdir(parents=True, exist_ok=True)
    from lcm_lora_pack.devkit.host import prepare_import

    prepare_import("cpu" if smoke else "cuda")
    for name, weights in taesd_state_dicts(23).items():
        save_file(weights, str(approx / f"taesd_{name}.safetensors"))
    if sdxl:
        sdxl_live.prepare_sdxl(base, smoke)
    path = base / "models" / "controlnet" / CONTROLNET
    if path.exists():
        return
    if smoke:
        from lcm_lora_pack.devkit.compose_models import write_sd15_controlnet

        write_sd15_controlnet(path)
        return
    write_full_controlnet(path)


def canvas_png(seed: int, smoke: bool, size: int | None = None) -> str:
    """The client's canvas for this call, a PNG as base64 text (random pixels; seed % IMAGES picks one of eight),
    ``size``² (default: SD1.5's side)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    size = size or side(smoke)
    pixels = np.random.default_rng(seed % IMAGES).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def taesd_state_dicts(seed: int) -> dict:
    """``{"encoder": …, "decoder": …}``: random weights for ComfyUI's TAESD modules (``comfy.taesd.taesd``; ComfyUI
    builds them with ``disable_weight_init`` layers, whose own tensors are uninitialised memory): N(0, 1/fan_in)
    for weights, zero biases -- values stay finite through the 3 upsampling stages."""
    import torch
    from comfy.taesd.taesd import Decoder, Encoder

    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in (("encoder", Encoder(4)), ("decoder", Decoder(4))):
        weights = {}
        for key, tensor in module.state_dict().items():
            if tensor.ndim > 1:
                fan_in = tensor[0].numel()
                weights[key] = torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5
            else:
                weights[key] = torch.zeros(tensor.shape)
        out[name] = weights
    return out


def write_full_controlnet(path: Path, device: str = "cuda") -> None:
    """A full-size SD1.5 ControlNet (diffusers ``ControlNetModel`` of SD1.5's UNet config, random fp16 weights;
    ComfyUI's ``ControlNetLoader`` converts the diffusers layout)."""
    import torch
    from diffusers import ControlNetModel
    from lcm_lora_pack.bench import synthetic
    from safetensors.torch import save_file

    config = synthetic.FAMILIES["sd15"].unet_config
    keys = ("in_channels", "down_block_types", "block_out_channels", "layers_per_block", "cross_attention_dim",
            "attention_head_dim")
    with torch.device("meta"):
        net = ControlNetModel(**{k: config[k] for k in keys if k in config})
    weights = synthetic.random_state_dict(net, device, torch.float16, 13)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in weights.items()}, str(path))


def _model_arm(prompt: dict, arm: str, model: list) -> list:
    """Node "6" between the model and the sampler for the arm; returns the model output to sample with."""
    if arm == "core_compile":
        prompt["6"] = {"class_type": "TorchCompileModel", "inputs": {"model": model, "backend": "cudagraphs"}}
    elif arm in ("cuda_graph", "compile_cuda_graph"):
        prompt["6"] = {"class_type": "LCMPack_LCMFastPath", "inputs": {"model": model, "mode": arm}}
    else:
        return model
    return ["6", 0]


def _decode(prompt: dict, arm: str, samples: list, vae: list) -> None:
    if arm in ("cuda_graph", "compile_cuda_graph"):
        prompt["8"] = {"class_type": "LCMPack_FastVAEDecode", "inputs": {"samples": samples, "vae": vae, "mode": arm}}
    else:
        prompt["8"] = {"class_type": "VAEDecode", "inputs": {"samples": samples, "vae": vae}}
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}


def lcm_graph(arm: str, seed: int, ckpt: str, lora: str, smoke: bool, taesd: bool = False) -> dict:
    """The pack's LCM graph (``taesd``: decoded by TAESD, graph (a))."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LCMPack_LCMLoraLoader", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                                "strength": 1.0, "allow_partial": False}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a live painting", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": side(smoke), "height": side(smoke),
                                                          "batch_size": 1}},
    }
    model = _model_arm(prompt, arm, ["2", 0])
    prompt["7"] = {"class_type": "LCMPack_KSamplerLCM", "inputs": {
        "model": model, "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": seed,
        "steps": 4, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0}}
    vae = ["1", 2]
    if taesd:
        prompt["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}}
        vae = ["10", 0]
    _decode(prompt, arm, ["7", 0], vae)
    return prompt


def live_graph(arm: str, seed: int, ckpt: str, lora: str, smoke: bool, control: bool = True,
               sampler: str = "euler", sdxl: bool = False) -> dict:
    """krita's default live graph (module docstring), graph (b); ``sampler``: ``KSamplerSelect``'s choice;
    ``sdxl``: graph (c), SDXL's models at 1024² (``ckpt`` and ``lora`` give way to ``sdxl_live``'s)."""
    controlnet, size = CONTROLNET, side(smoke)
    if sdxl:
        ckpt, lora, controlnet, size = sdxl_live.CKPT, sdxl_live.LORA, sdxl_live.CONTROLNET, sdxl_live.side(smoke)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": lora,
                                                              "strength_model": 1.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a live painting", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
        "11": {"class_type": "LCMBenchClient_LoadImageBase64", "inputs": {"image": canvas_png(seed, smoke, size)}},
        "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["1", 2]}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "14": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}},
        "17": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["16", 0], "step": 7}},
    }
    model = _model_arm(prompt, arm, ["2", 0])
    positive, negative = ["3", 0], ["4", 0]
    if control:
        prompt["18"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet}}
        prompt["19"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": positive, "negative": negative, "control_net": ["18", 0], "image": ["11", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "vae": ["1", 2]}}
        positive, negative = ["19", 0], ["19", 1]
    prompt["15"] = {"class_type": "CFGGuider", "inputs": {"model": model, "positive": positive,
                                                          "negative": negative, "cfg": 1.8}}
    prompt["16"] = {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "sgm_uniform",
                                                               "steps": 10, "denoise": 1.0}}
    prompt["7"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["13", 0], "guider": ["15", 0], "sampler": ["14", 0], "sigmas": ["17", 1],
        "latent_image": ["12", 0]}}
    _decode(prompt, arm, ["7", 0], ["1", 2])
    return prompt


def floor_graph(arm: str, seed: int, ckpt: str, lora: str, smoke: bool) -> dict:
    """``floor``: the canvas sent inline → ``PreviewImage``: no model, no sampling -- the server's own round trip
    for a job of (b)'s size (the POST with a 512² PNG, validation, execution, PNG encoding, the image back)."""
    return {"11": {"class_type": "LCMBenchClient_LoadImageBase64", "inputs": {"image": canvas_png(seed, smoke)}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}}


GRAPHS = {
    "lcm": lambda arm, seed, ckpt, lora, smoke: lcm_graph(arm, seed, ckpt, lora, smoke),
    "taesd": lambda arm, seed, ckpt, lora, smoke: lcm_graph(arm, seed, ckpt, lora, smoke, taesd=True),
    "live": lambda arm, seed, ckpt, lora, smoke: live_graph(arm, seed, ckpt, lora, smoke),
    "live-nocn": lambda arm, seed, ckpt, lora, smoke: live_graph(arm, seed, ckpt, lora, smoke, control=False),
    "live-sdxl": lambda arm, seed, ckpt, lora, smoke: live_graph(arm, seed, ckpt, lora, smoke, sdxl=True),
    "live-sdxl-nocn": lambda arm, seed, ckpt, lora, smoke: live_graph(arm, seed, ckpt, lora, smoke, control=False,
                                                                    sdxl=True),
    "floor": floor_graph,
}


# How the image node "9" gives the image back: core's PreviewImage (a PNG file at compression level 1 with the
# prompt as metadata, read by the client with /view), or over the websocket as krita's ETN_SendImageWebSocket does
# (the bench's client node; the server encodes PNG or JPEG).
IMAGE_OUTS = {"preview": None, "ws-png": "PNG", "ws-jpeg": "JPEG"}


def build(name: str, arm: str, seed: int, ckpt: str, lora: str, smoke: bool, image_out: str = "preview") -> dict:
    """Graph ``name`` of :data:`GRAPHS`; ``live@SAMPLER`` / ``live-nocn@SAMPLER`` run (b) with another core
    sampler of the captured loop (``euler_ancestral``, ``dpmpp_2m``, ``ddim``, ``lcm``); ``image_out``: one of
    :data:`IMAGE_OUTS`."""
    base, _, sampler = name.partition("@")
    if sampler:
        if base not in ("live", "live-nocn", "live-sdxl", "live-sdxl-nocn"):
            raise ValueError(f"graph {name!r}: a sampler can be named for the live graphs only")
        prompt = live_graph(arm, seed, ckpt, lora, smoke, control=not base.endswith("nocn"), sampler=sampler,
                            sdxl="sdxl" in base)
    else:
        prompt = GRAPHS[name](arm, seed, ckpt, lora, smoke)
    return with_image_out(prompt, image_out)


def with_image_out(prompt: dict, image_out: str) -> dict:
    """``prompt`` with its image node "9" giving the image back the ``image_out`` way (:data:`IMAGE_OUTS`)."""
    if image_out not in IMAGE_OUTS:
        raise ValueError(f"image_out {image_out!r}: one of {', '.join(IMAGE_OUTS)}")
    if IMAGE_OUTS[image_out] is not None:
        prompt["9"] = {"class_type": "LCMBenchClient_SendImageWebSocket",
                       "inputs": {"images": prompt["9"]["inputs"]["images"], "format": IMAGE_OUTS[image_out]}}
    return prompt


def table(results: list[dict]) -> str:
    """Markdown table of the arms' rows (graph, arm, first call s, median ms, speed-up over eager, px Δ)."""
    eager = {r["graph"]: r.get("median_ms") for r in results if r.get("arm") == "eager" and "graph" in r}
    lines = ["| graph | arm | first call s | median ms | × eager | px Δ vs eager | status |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        if "graph" not in r:
            continue
        median, base = r.get("median_ms"), eager.get(r["graph"])
        speedup = f"{base / median:.2f}" if median and base else "—"
        diff = "—" if r.get("max_pixel_diff") is None else str(r["max_pixel_diff"])
        lines.append(f"| {r['graph']} | {r['arm']} | {r['first_s']} | {median if median is not None else '—'} | "
                     f"{speedup} | {diff} | {r['status'][:60]} |")
    return "\n".join(lines)


def phase_table(results: list[dict]) -> str:
    """Markdown table of where each arm's median job goes (``phases_ms``: live_client.phases, medians of the timed
    calls), phases in the order the job met them, nodes by class."""
    lines = ["| graph | arm | median ms | phases, ms (median of each) |", "|---|---|---:|---|"]
    for r in results:
        if r.get("phases_ms"):
            parts = " · ".join(f"{name} {ms:.1f}" for name, ms in r["phases_ms"].items())
            lines.append(f"| {r['graph']} | {r['arm']} | {r.get('median_ms')} | {parts} |")
    return "\n".join(lines)
