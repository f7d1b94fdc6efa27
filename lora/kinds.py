"""The accelerator kinds the pack knows: names, published file names, advice (pure data, no torch).

A *kind* says what a LoRA (or checkpoint) was distilled for, and so how it must be sampled
(``samplers/presets.py`` holds the recipes). Sources, one per kind (the authors' model cards / READMEs):

* ``lcm``   LCM-LoRA (arXiv 2311.05556; latent-consistency/lcm-lora-sdv1-5, -sdxl, -ssd-1b; segmind/Segmind-VegaRT):
  published as ``pytorch_lora_weights.safetensors``; trained by diffusers'
  ``examples/consistency_distillation/train_lcm_distill_lora_*`` (rank 64 on the UNet's attention, feed-forward,
  resnet, time-embedding and sampler layers; one ``lora_alpha`` for every module; no text encoder).
* ``tcd``   TCD-LoRA (arXiv 2402.19159; h1t/TCD-SD15-LoRA, TCD-SD21-base-LoRA, TCD-SDXL-LoRA).
* ``hyper-sd`` / ``hyper-sd-unified`` / ``hyper-sd-cfg``  Hyper-SD (arXiv 2404.13686; ByteDance/Hyper-SD):
  ``Hyper-SD15-{2,4,8}steps-lora``, ``Hyper-SDXL-{2,4,8}steps-lora`` (n-step), ``Hyper-SD*-1step-lora`` (the
  unified LoRA, 1-8 steps with TCD), ``Hyper-SD*-{8,12}steps-CFG-lora`` (CFG-preserving).
* ``lightning`` SDXL-Lightning (arXiv 2402.13929; ByteDance/SDXL-Lightning): ``sdxl_lightning_{2,4,8}step_lora``.
* ``dmd2``  DMD2 (arXiv 2405.14867; tianweiy/DMD2): ``dmd2_sdxl_4step_lora(_fp16)``.
* ``flash`` Flash Diffusion (arXiv 2406.02347; jasperai/flash-sd, jasperai/flash-sdxl).
* ``pcm``   PCM (arXiv 2405.18407; wangfuyun/PCM_Weights): recognised so that it is never stacked on another
  accelerator, but **no preset**: the public copies of its usage disagree (TCD, DDIM and Euler-ancestral
  trailing are all shown), so the pack does not guess (docs/accelerators.md).

The order of :data:`NAME_PATTERNS` matters: a "Hyper-SD ... TCD" title is Hyper-SD; an "LCM" mention inside
another kind's name loses ("pcm_sdxl_lcmlike_lora" is PCM).
"""
from __future__ import annotations

import re

STYLE = "style"
KINDS = ("lcm", "tcd", "hyper-sd", "hyper-sd-unified", "hyper-sd-cfg", "lightning", "dmd2", "flash", "pcm")
ACCELERATOR_KINDS = frozenset(KINDS)

KIND_NAMES = {
    "lcm": "LCM", "tcd": "TCD", "hyper-sd": "Hyper-SD", "hyper-sd-unified": "Hyper-SD unified (1-step)",
    "hyper-sd-cfg": "Hyper-SD CFG", "lightning": "Lightning", "dmd2": "DMD2", "flash": "Flash Diffusion",
    "pcm": "PCM", STYLE: "style",
}

# (kind, pattern) over the file name and descriptive metadata; first match wins.
NAME_PATTERNS = (
    ("hyper-sd-cfg", re.compile(r"hyper[-_ ]?sd.*cfg", re.I)),
    ("hyper-sd-unified", re.compile(r"hyper[-_ ]?sd.*(^|[^0-9])1[-_ ]?steps?([^0-9]|$)", re.I)),
    ("hyper-sd", re.compile(r"hyper[-_ ]?sd", re.I)),
    ("pcm", re.compile(r"(^|[^a-z])pcm([^a-z]|$)|phased[-_ ]consistency", re.I)),
    ("tcd", re.compile(r"(^|[^a-z])tcd([^a-z]|$)|trajectory[-_ ]consistency", re.I)),
    ("lightning", re.compile(r"lightning", re.I)),
    ("dmd2", re.compile(r"dmd2?", re.I)),
    ("flash", re.compile(r"flash[-_ ]?(sd|diffusion)", re.I)),
    ("lcm", re.compile(r"(^|[^a-z])lcm|latent[-_ ]consistency|vegart", re.I)),
)

# The sampler line of the loader's / mixer's report (what the pack sets, or what to use).
SAMPLER_ADVICE = {
    "lcm": "LCM model sampling set: sample with KSampler (LCM) (preset auto) or the LCM sampler, 'simple' "
           "scheduler, 4-8 steps, cfg 1-2.",
    "tcd": "TCD LoRA: KSampler (LCM) preset auto samples it with TCD (gamma 0.3), 4-8 steps, cfg 1.",
    "hyper-sd": "Hyper-SD n-step LoRA: KSampler (LCM) preset auto samples it with DDIM trailing at the file's "
                "step count, cfg 1.",
    "hyper-sd-unified": "Hyper-SD unified (1-step) LoRA: KSampler (LCM) preset auto samples it with TCD "
                        "(gamma 1.0), 1-8 steps, cfg 1.",
    "hyper-sd-cfg": "Hyper-SD CFG LoRA: KSampler (LCM) preset auto samples it with DDIM trailing at the file's "
                    "step count, cfg 5 (negative prompt works).",
    "lightning": "Lightning LoRA: KSampler (LCM) preset auto samples it with Euler on trailing timesteps at the "
                 "file's step count, cfg 1.",
    "dmd2": "DMD2 LoRA: KSampler (LCM) preset auto samples it with LCM at timesteps 999, 749, 499, 249, cfg 1.",
    "flash": "Flash Diffusion LoRA: KSampler (LCM) preset auto samples it with LCM, 4 steps, cfg 1.",
    "pcm": "PCM LoRA: no preset (its authors' scheduler could not be established from public sources); "
           "KSampler (LCM) samples it with its own inputs.",
    STYLE: "Style LoRA (no acceleration kind in metadata, file name or content): applied as is; sampling "
           "unchanged. If it is an accelerator, pick its kind on the loader's 'kind' input.",
}

# Weight advice for style LoRAs mixed with each accelerator, with where it comes from.
STYLE_WEIGHT_ADVICE = {
    "lcm": "style weight ~0.8 with the LCM-LoRA at 1.0 (LCM-LoRA paper, arXiv 2311.05556 sec. 4; diffusers' "
           "LCM-LoRA guide uses adapter weights [1.0, 0.8]).",
    "tcd": "style weight 1.0 with the TCD-LoRA at 1.0 (diffusers' TCD-LoRA guide mixes a style LoRA at [1.0, 1.0]); "
           "lower the style if details burn.",
    "dmd2": "DMD2's card fuses the LoRA at scale 1.0 and notes a smaller scale may suit community models; start the "
            "style at 1.0 and lower it if the image burns.",
}
DEFAULT_STYLE_WEIGHT_ADVICE = ("the authors publish no style-weight advice for {name}: start the style at 0.8-1.0 "
                               "with the accelerator at 1.0 and lower the style if the image burns.")


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, kind)


def is_accelerator(kind: str) -> bool:
    return kind in ACCELERATOR_KINDS


def kind_from_text(text: str) -> str | None:
    """The accelerator kind a file name or a title names, if any (first of :data:`NAME_PATTERNS`)."""
    return next((kind for kind, pattern in NAME_PATTERNS if pattern.search(text)), None)


def sampler_advice(kind: str) -> str:
    return SAMPLER_ADVICE.get(kind, SAMPLER_ADVICE[STYLE])


def style_weight_advice(kind: str) -> str:
    """What the accelerator's authors say about the weight of style LoRAs mixed with it (or that they say nothing)."""
    return STYLE_WEIGHT_ADVICE.get(kind, DEFAULT_STYLE_WEIGHT_ADVICE.format(name=kind_name(kind)))
