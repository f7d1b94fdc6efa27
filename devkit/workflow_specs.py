"""The example workflows as data: nodes by key, widget values by input *name*, links by input name.

``scripts/build_example_workflows.py`` turns each :class:`Spec` into the UI-format file users drag into
ComfyUI (``example_workflows/<name>.json``, positional ``widgets_values`` in the node's input order read from
``/object_info``) and its API-format twin (``example_workflows/api/<name>.json``). Editing a workflow means
editing it here and rebuilding; tests check the committed files equal a fresh build's conversion.

Settings follow the papers: LCM-LoRA (arXiv 2311.05556) 4 steps, cfg 1.0, style LoRA mixed at 1.0 / 0.8;
TCD (arXiv 2402.19159) gamma 0.3; the baseline is the model's usual 25-step Euler at cfg 7.5. The accelerator
workflows (TCD, Hyper-SD, SDXL-Lightning, DMD2) load the authors' published file under its published name and
leave KSampler (LCM) on preset auto: it samples with the recipe of the kind the loader recognised
(docs/accelerators.md).

The composition workflows (issue 24, docs/composition.md) add one component each to the LCM-LoRA graph: a core
ControlNet, an IP-Adapter (ComfyUI_IPAdapter_plus), AnimateLCM (AnimateDiff-Evolved) and inpainting with a noise
mask. The two third-party ones need those packs installed (``devkit.workflows.packs_needed``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
LCM_SD15 = "lcm-lora-sdv1-5.safetensors"
LCM_SDXL = "lcm-lora-sdxl.safetensors"
STYLE_SDXL = "papercut.safetensors"
TCD_SD15 = "TCD-SD15-LoRA.safetensors"
HYPER_SDXL_8 = "Hyper-SDXL-8steps-lora.safetensors"
LIGHTNING_SDXL_4 = "sdxl_lightning_4step_lora.safetensors"
DMD2_SDXL = "dmd2_sdxl_4step_lora_fp16.safetensors"
CONTROLNET_CANNY = "control_v11p_sd15_canny_fp16.safetensors"
IPADAPTER_SD15 = "ip-adapter_sd15.safetensors"
CLIP_VISION_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
ANIMATELCM_LORA = "AnimateLCM_sd15_t2v_lora.safetensors"
ANIMATELCM_MOTION = "AnimateLCM_sd15_t2v.ckpt"
NEGATIVE = "blurry, low quality, watermark"


@dataclass
class Node:
    key: str
    type: str
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, int]] = field(default_factory=dict)
    title: str | None = None


@dataclass
class Spec:
    name: str
    title: str
    description: str
    nodes: list[Node]


def _checkpoint(name: str) -> Node:
    return Node("ckpt", "CheckpointLoaderSimple", {"ckpt_name": name}, title="Load Checkpoint")


def _prompts(clip_source: tuple[str, int], positive: str) -> list[Node]:
    return [Node("pos", "CLIPTextEncode", {"text": positive}, {"clip": clip_source}, title="Positive prompt"),
            Node("neg", "CLIPTextEncode", {"text": NEGATIVE}, {"clip": clip_source}, title="Negative prompt")]


def _latent(size: int) -> Node:
    return Node("latent", "EmptyLatentImage", {"width": size, "height": size, "batch_size": 1})


def _decode_save(samples: tuple[str, int], prefix: str, key: str = "") -> list[Node]:
    return [Node(f"decode{key}", "VAEDecode", {}, {"samples": samples, "vae": ("ckpt", 2)}),
            Node(f"save{key}", "SaveImage", {"filename_prefix": prefix}, {"images": (f"decode{key}", 0)})]


def _lcm_loader(lora: str) -> Node:
    return Node("lcm_lora", "LCMPack_LCMLoraLoader", {"lora_name": lora, "strength": 1.0, "allow_partial": False},
                {"model": ("ckpt", 0), "clip": ("ckpt", 1)}, title="LCM-LoRA Loader")


def _ksampler_lcm(model: tuple[str, int], latent: tuple[str, int], steps: int = 4, denoise: float = 1.0,
                  seed: int = 42) -> Node:
    return Node("sampler", "LCMPack_KSamplerLCM",
                {"seed": seed, "steps": steps, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": denoise},
                {"model": model, "positive": ("pos", 0), "negative": ("neg", 0), "latent_image": latent})


def sd15_lcm_lora_4step() -> Spec:
    return Spec("sd15_lcm_lora_4step", "SD1.5 + LCM-LoRA, 4 steps",
                "Text to image with Stable Diffusion 1.5 and LCM-LoRA: 4 steps at cfg 1.0 instead of 25+.",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("lcm_lora", 1), "a photo of a red fox in a snowy forest, detailed, golden hour"),
                 _latent(512), _ksampler_lcm(("lcm_lora", 0), ("latent", 0)),
                 *_decode_save(("sampler", 0), "lcm_sd15_4step")])


def sdxl_lcm_lora_4step() -> Spec:
    return Spec("sdxl_lcm_lora_4step", "SDXL + LCM-LoRA, 4 steps",
                "Text to image with SDXL base 1.0 and LCM-LoRA SDXL: 4 steps at cfg 1.0.",
                [_checkpoint(SDXL), _lcm_loader(LCM_SDXL),
                 *_prompts(("lcm_lora", 1), "a lighthouse on a cliff at sunset, dramatic sky, highly detailed"),
                 _latent(1024), _ksampler_lcm(("lcm_lora", 0), ("latent", 0)),
                 *_decode_save(("sampler", 0), "lcm_sdxl_4step")])


def _stack(key: str, lora: str, weight: float, role: str, previous: str | None) -> Node:
    links = {"stack": (previous, 0)} if previous else {}
    return Node(key, "LCMPack_LoraStack", {"lora_name": lora, "weight": weight, "role": role}, links)


def _paper_mix() -> list[Node]:
    """The SDXL checkpoint and the LCM-LoRA 1.0 + style 0.8 stack (LCM-LoRA report's mixing weights)."""
    return [_checkpoint(SDXL), _stack("stack_lcm", LCM_SDXL, 1.0, "accelerator", None),
            _stack("stack_style", STYLE_SDXL, 0.8, "style", "stack_lcm")]


def sdxl_lcm_lora_style_mix() -> Spec:
    return Spec("sdxl_lcm_lora_style_mix", "SDXL: LCM-LoRA 1.0 + style LoRA 0.8",
                "LCM-LoRA mixed with a style LoRA at the LCM-LoRA report's weights (1.0 / 0.8), applied in one "
                "model clone, then 4 LCM steps.",
                [*_paper_mix(),
                 Node("mixer", "LCMPack_LoraMixer", {"style_normalization": "none", "allow_partial": False,
                                                     "style_budget": 1.0},
                      {"model": ("ckpt", 0), "stack": ("stack_style", 0), "clip": ("ckpt", 1)}),
                 *_prompts(("mixer", 1), "papercut, a fox sitting in a forest, layered paper art"),
                 _latent(1024), _ksampler_lcm(("mixer", 0), ("latent", 0)),
                 *_decode_save(("sampler", 0), "lcm_sdxl_papercut")])


def sd15_lcm_img2img() -> Spec:
    return Spec("sd15_lcm_img2img", "SD1.5 + LCM-LoRA, image to image",
                "Image to image with LCM-LoRA: the input is encoded and re-sampled at denoise 0.5 in 4 steps "
                "(the LCM grid is cut from the top, timesteps 499..19).",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("lcm_lora", 1), "an oil painting of a landscape, vivid colours"),
                 Node("image", "LoadImage", {"image": "example.png"}, title="Input image"),
                 Node("encode", "VAEEncode", {}, {"pixels": ("image", 0), "vae": ("ckpt", 2)}),
                 _ksampler_lcm(("lcm_lora", 0), ("encode", 0), denoise=0.5),
                 *_decode_save(("sampler", 0), "lcm_sd15_img2img")])


def sd15_tcd_gamma() -> Spec:
    return Spec("sd15_tcd_gamma", "SD1.5 + TCD-LoRA, gamma 0.3",
                "Trajectory Consistency Distillation: the TCD sampler with gamma (stochasticity) 0.3 in "
                "SamplerCustom, on the LCM grid from the LCM Scheduler node.",
                [_checkpoint(SD15),
                 Node("tcd_lora", "LCMPack_LCMLoraLoader",
                      {"lora_name": TCD_SD15, "strength": 1.0, "allow_partial": False},
                      {"model": ("ckpt", 0), "clip": ("ckpt", 1)}, title="TCD-LoRA Loader"),
                 *_prompts(("tcd_lora", 1), "a cozy cabin in the mountains, watercolor"),
                 _latent(512),
                 Node("tcd", "LCMPack_LCMSampler", {"sampler": "tcd", "gamma": 0.3}, title="TCD Sampler"),
                 Node("schedule", "LCMPack_LCMScheduler",
                      {"steps": 4, "denoise": 1.0, "original_inference_steps": 0, "custom_timesteps": ""},
                      {"model": ("tcd_lora", 0)}),
                 Node("sampler", "SamplerCustom", {"add_noise": True, "noise_seed": 42, "cfg": 1.0},
                      {"model": ("tcd_lora", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                       "sampler": ("tcd", 0), "sigmas": ("schedule", 0), "latent_image": ("latent", 0)}),
                 *_decode_save(("sampler", 0), "tcd_sd15_gamma03")])


def sdxl_lora_export_merged() -> Spec:
    return Spec("sdxl_lora_export_merged", "Export LCM-LoRA + style as one LoRA",
                "Writes the 1.0 / 0.8 mix of LCM-LoRA SDXL and a style LoRA as one kohya-format LoRA file in "
                "models/loras (concat: exact). Load it anywhere with a plain LoRA loader.",
                [*_paper_mix(),
                 Node("export", "LCMPack_LoraExport",
                      {"filename": "lcm-papercut-sdxl", "mode": "concat", "rank": 64, "overwrite": False,
                       "style_normalization": "none", "style_budget": 1.0},
                      {"model": ("ckpt", 0), "stack": ("stack_style", 0), "clip": ("ckpt", 1)})])


def sd15_lcm_vs_25step_baseline() -> Spec:
    baseline = Node("baseline", "KSampler",
                    {"seed": 42, "steps": 25, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal",
                     "denoise": 1.0},
                    {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                     "latent_image": ("latent", 0)}, title="Baseline: 25 steps, Euler, cfg 7.5")
    sampler = _ksampler_lcm(("lcm_lora", 0), ("latent", 0))
    sampler.title = "LCM-LoRA: 4 steps, cfg 1.0"
    return Spec("sd15_lcm_vs_25step_baseline", "SD1.5: LCM-LoRA 4 steps vs 25-step baseline",
                "The same model, prompt and seed: 4 LCM-LoRA steps (left) next to the usual 25-step Euler "
                "baseline (right), stitched side by side.",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("ckpt", 1), "a bowl of fruit on a wooden table, studio lighting"),
                 _latent(512), sampler, baseline,
                 Node("decode_lcm", "VAEDecode", {}, {"samples": ("sampler", 0), "vae": ("ckpt", 2)}),
                 Node("decode_base", "VAEDecode", {}, {"samples": ("baseline", 0), "vae": ("ckpt", 2)}),
                 Node("stitch", "ImageStitch", {"direction": "right", "match_image_size": True, "spacing_width": 8,
                                                "spacing_color": "white"},
                      {"image1": ("decode_lcm", 0), "image2": ("decode_base", 0)},
                      title="Side by side (left: LCM-LoRA, right: baseline)"),
                 Node("save", "SaveImage", {"filename_prefix": "lcm4_vs_base25"}, {"images": ("stitch", 0)})])


def _accelerated(name: str, title: str, description: str, lora: str, checkpoint: str, size: int, steps: int,
                 prompt: str) -> Spec:
    """Checkpoint → LCM-LoRA Loader (kind auto) → KSampler (LCM) with preset auto at the file's step count."""
    loader = Node("accel", "LCMPack_LCMLoraLoader",
                  {"lora_name": lora, "strength": 1.0, "allow_partial": False, "kind": "auto"},
                  {"model": ("ckpt", 0), "clip": ("ckpt", 1)}, title="Accelerator LoRA Loader (kind auto)")
    sampler = Node("sampler", "LCMPack_KSamplerLCM",
                   {"seed": 42, "steps": steps, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0,
                    "preset": "auto"},
                   {"model": ("accel", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                    "latent_image": ("latent", 0)}, title="KSampler (LCM), preset auto")
    return Spec(name, title, description,
                [_checkpoint(checkpoint), loader, *_prompts(("accel", 1), prompt), _latent(size), sampler,
                 *_decode_save(("sampler", 0), name)])


def sd15_tcd_preset() -> Spec:
    return _accelerated("sd15_tcd_preset", "SD1.5 + TCD-LoRA, preset auto",
                        "TCD-LoRA (h1t/TCD-SD15-LoRA) sampled by KSampler (LCM) on preset auto: TCDScheduler's "
                        "gamma 0.3 on the LCM grid, 4 steps, cfg 1, as the TCD card gives it.",
                        TCD_SD15, SD15, 512, 4, "a cozy cabin in the mountains, watercolor")


def sdxl_hyper_sd_8step() -> Spec:
    return _accelerated("sdxl_hyper_sd_8step", "SDXL + Hyper-SD 8-step LoRA, preset auto",
                        "Hyper-SDXL-8steps-lora sampled as the Hyper-SD card says: DDIM on trailing timesteps "
                        "(999, 874, ..., 124), 8 steps, cfg 1.",
                        HYPER_SDXL_8, SDXL, 1024, 8, "a red vintage car on a coastal road, photo, detailed")


def sdxl_lightning_4step() -> Spec:
    return _accelerated("sdxl_lightning_4step", "SDXL + SDXL-Lightning 4-step LoRA, preset auto",
                        "sdxl_lightning_4step_lora sampled as the SDXL-Lightning card says: Euler on trailing "
                        "timesteps 999, 749, 499, 249, cfg 1.",
                        LIGHTNING_SDXL_4, SDXL, 1024, 4, "a girl smiling, portrait, soft light")


def sdxl_dmd2_4step() -> Spec:
    return _accelerated("sdxl_dmd2_4step", "SDXL + DMD2 4-step LoRA, preset auto",
                        "dmd2_sdxl_4step_lora sampled as the DMD2 card says: LCMScheduler at timesteps 999, 749, "
                        "499, 249 on the full schedule, cfg 1.",
                        DMD2_SDXL, SDXL, 1024, 4, "a photo of a cat on a windowsill, morning light")


def sd15_lcm_controlnet() -> Spec:
    return Spec("sd15_lcm_controlnet", "SD1.5 + LCM-LoRA + ControlNet (canny), 4 steps",
                "Core ControlNet on an LCM-LoRA graph: the input's canny edges steer the image (Apply ControlNet, "
                "strength 1.0); 4 steps at cfg 1.0, one UNet + ControlNet call per step.",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("lcm_lora", 1), "a porcelain vase on a table, soft light, detailed"),
                 Node("image", "LoadImage", {"image": "example.png"}, title="Control image"),
                 Node("canny", "Canny", {"low_threshold": 0.4, "high_threshold": 0.8}, {"image": ("image", 0)},
                      title="Canny edges"),  # own title: core's name differs (0.33.0: 'Detect Edges (Canny)')
                 Node("controlnet", "ControlNetLoader", {"control_net_name": CONTROLNET_CANNY}),
                 Node("apply", "ControlNetApplyAdvanced", {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
                      {"positive": ("pos", 0), "negative": ("neg", 0), "control_net": ("controlnet", 0),
                       "image": ("canny", 0)}),
                 _latent(512),
                 Node("sampler", "LCMPack_KSamplerLCM",
                      {"seed": 42, "steps": 4, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0},
                      {"model": ("lcm_lora", 0), "positive": ("apply", 0), "negative": ("apply", 1),
                       "latent_image": ("latent", 0)}),
                 *_decode_save(("sampler", 0), "lcm_sd15_controlnet")])


def sd15_lcm_ipadapter() -> Spec:
    return Spec("sd15_lcm_ipadapter", "SD1.5 + LCM-LoRA + IP-Adapter, 4 steps",
                "IP-Adapter (ComfyUI_IPAdapter_plus) on the LCM-LoRA model: the reference image steers the result "
                "through the UNet's cross-attention on every step; 4 steps at cfg 1.0. Needs ComfyUI_IPAdapter_plus.",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("lcm_lora", 1), "a portrait in the style of the reference, detailed"),
                 Node("reference", "LoadImage", {"image": "example.png"}, title="Reference image"),
                 Node("ipadapter_file", "IPAdapterModelLoader", {"ipadapter_file": IPADAPTER_SD15}),
                 Node("clip_vision", "CLIPVisionLoader", {"clip_name": CLIP_VISION_H}),
                 Node("ipadapter", "IPAdapterAdvanced",
                      {"weight": 0.8, "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0,
                       "end_at": 1.0, "embeds_scaling": "V only"},
                      {"model": ("lcm_lora", 0), "ipadapter": ("ipadapter_file", 0), "image": ("reference", 0),
                       "clip_vision": ("clip_vision", 0)}),
                 _latent(512), _ksampler_lcm(("ipadapter", 0), ("latent", 0)),
                 *_decode_save(("sampler", 0), "lcm_sd15_ipadapter")])


def sd15_animatelcm() -> Spec:
    """AnimateLCM as docs/accelerators.md gives it: its LoRA at 0.8 through the pack's loader (kind auto →
    animatelcm), ADE's beta schedule ``use existing`` so KSampler (LCM)'s preset samples the authors' schedule (LCM on
    linear betas), cfg 1.5; 16 frames (the batch is the video)."""
    loader = Node("accel", "LCMPack_LCMLoraLoader",
                  {"lora_name": ANIMATELCM_LORA, "strength": 0.8, "allow_partial": False, "kind": "auto"},
                  {"model": ("ckpt", 0), "clip": ("ckpt", 1)}, title="AnimateLCM LoRA Loader (kind auto)")
    sampler = Node("sampler", "LCMPack_KSamplerLCM",
                   {"seed": 42, "steps": 4, "cfg": 1.5, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0,
                    "preset": "auto"},
                   {"model": ("evolved", 0), "positive": ("pos", 0), "negative": ("neg", 0),
                    "latent_image": ("latent", 0)}, title="KSampler (LCM), preset auto (AnimateLCM)")
    return Spec("sd15_animatelcm", "SD1.5 AnimateLCM (AnimateDiff-Evolved), 4 steps",
                "AnimateLCM: its motion module in AnimateDiff-Evolved and its LoRA (0.8) through the LCM-LoRA Loader; "
                "beta schedule 'use existing', so KSampler (LCM) on preset auto samples the authors' schedule (LCM "
                "on linear betas, cfg 1.5). 16 frames, saved as images. Needs ComfyUI-AnimateDiff-Evolved.",
                [_checkpoint(SD15), loader, *_prompts(("accel", 1), "a boat sailing on a calm sea, sunset, waves"),
                 Node("motion_model", "ADE_LoadAnimateDiffModel", {"model_name": ANIMATELCM_MOTION}),
                 Node("motion_apply", "ADE_ApplyAnimateDiffModelSimple", {}, {"motion_model": ("motion_model", 0)}),
                 Node("evolved", "ADE_UseEvolvedSampling", {"beta_schedule": "use existing"},
                      {"model": ("accel", 0), "m_models": ("motion_apply", 0)}),
                 Node("latent", "EmptyLatentImage", {"width": 512, "height": 512, "batch_size": 16},
                      title="16 frames"),
                 sampler, *_decode_save(("sampler", 0), "animatelcm_sd15")])


def sd15_lcm_inpaint() -> Spec:
    return Spec("sd15_lcm_inpaint", "SD1.5 + LCM-LoRA, inpainting with a noise mask",
                "Inpainting with any SD1.5 checkpoint and the LCM-LoRA: Set Latent Noise Mask keeps the image "
                "outside the mask; 4 steps at denoise 1.0. The mask is the centre square: paint your own in the "
                "input's mask editor and connect Load Image's MASK instead.",
                [_checkpoint(SD15), _lcm_loader(LCM_SD15),
                 *_prompts(("lcm_lora", 1), "a bouquet of sunflowers, detailed, natural light"),
                 Node("image", "LoadImage", {"image": "example.png"}, title="Input image"),
                 Node("encode", "VAEEncode", {}, {"pixels": ("image", 0), "vae": ("ckpt", 2)}),
                 Node("canvas", "SolidMask", {"value": 0.0, "width": 512, "height": 512}, title="Mask: empty"),
                 Node("square", "SolidMask", {"value": 1.0, "width": 256, "height": 256}, title="Mask: square"),
                 Node("mask", "MaskComposite", {"x": 128, "y": 128, "operation": "add"},
                      {"destination": ("canvas", 0), "source": ("square", 0)}, title="Mask: centre square"),
                 Node("noise_mask", "SetLatentNoiseMask", {}, {"samples": ("encode", 0), "mask": ("mask", 0)}),
                 _ksampler_lcm(("lcm_lora", 0), ("noise_mask", 0)),
                 *_decode_save(("sampler", 0), "lcm_sd15_inpaint")])


SPECS = [sd15_lcm_lora_4step, sdxl_lcm_lora_4step, sdxl_lcm_lora_style_mix, sd15_lcm_img2img, sd15_tcd_gamma,
         sdxl_lora_export_merged, sd15_lcm_vs_25step_baseline, sd15_tcd_preset, sdxl_hyper_sd_8step,
         sdxl_lightning_4step, sdxl_dmd2_4step, sd15_lcm_controlnet, sd15_lcm_ipadapter, sd15_animatelcm,
         sd15_lcm_inpaint]


def all_specs() -> list[Spec]:
    return [make() for make in SPECS]
