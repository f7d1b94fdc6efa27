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


SPECS = [sd15_lcm_lora_4step, sdxl_lcm_lora_4step, sdxl_lcm_lora_style_mix, sd15_lcm_img2img, sd15_tcd_gamma,
         sdxl_lora_export_merged, sd15_lcm_vs_25step_baseline, sd15_tcd_preset, sdxl_hyper_sd_8step,
         sdxl_lightning_4step, sdxl_dmd2_4step]


def all_specs() -> list[Spec]:
    return [make() for make in SPECS]
