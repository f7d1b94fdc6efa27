"""Sections: end-to-end graph (text encode, sample, VAE decode) LCM-LoRA 4 steps vs 25-step DPM++ 2M cfg 7.5,
and the pack's LCM graph under core's ``TorchCompileModel``.

The LCM arm samples a LoRA-patched copy of the UNet and the baseline the unpatched one: two ComfyUI
copies of the same weights stay loaded, so interleaving the arms never re-patches weights (the apply cost
is measured on its own in the LoRA section).
"""
from __future__ import annotations

import logging
import time

import torch

from . import timing
from .context import BenchContext
from .lora_sections import benchmark_loras, core_lora_chain, pack_lcm_lora
from .sampling_sections import _ksampler, lcm_sampling_arms
from .synthetic import synthetic_conditioning

LOG = logging.getLogger(__name__)
PROMPT = "a photograph of an astronaut riding a horse, detailed, 35mm"
NEGATIVE = "blurry, low quality"
BASELINE = {"steps": 25, "cfg": 7.5, "sampler": "dpmpp_2m", "scheduler": "karras"}


def lcm_model(ctx: BenchContext, models) -> tuple[object, str]:
    """A separate UNet copy with the LCM-LoRA applied (pack loader when merged, else core's loader)."""
    names = benchmark_loras(ctx, models)
    copy = models.fresh_comfy_unet()
    if ctx.host.has("LCMPack_LCMLoraLoader"):
        return pack_lcm_lora(ctx, copy, models.clip, names["lcm"]), "pack LCMLoraLoader"
    return core_lora_chain(ctx, copy, [names["lcm"]], [1.0]), "core LoraLoaderModelOnly"


def pack_lcm_sampler(ctx: BenchContext, model, latent):
    """The pack's 4-step LCM sampler ``fn(positive, negative)``: KSamplerLCM, else ModelSamplingLCM +
    KSampler; (None, None) if neither node is registered."""
    arms, _ = lcm_sampling_arms(ctx, model, latent)
    for name in ("pack KSamplerLCM", "pack ModelSamplingLCM + KSampler lcm/simple"):
        if name in arms:
            return name, arms[name]
    return None, None


def section_e2e(ctx: BenchContext, family_name: str, compile_backend: str | None = None) -> None:
    """``compile_backend`` set: both arms' UNets go through core's TorchCompileModel first."""
    if compile_backend and ctx.device == "cpu":
        ctx.report("e2e", f"### {family_name}: end to end with TorchCompileModel\n\nskipped on CPU (smoke run)\n")
        return
    models = ctx.models(family_name, with_clip_vae=True)
    host = ctx.host
    size = models.family.image_size
    (latent,) = host.call("EmptyLatentImage", width=size, height=size, batch_size=1)
    lora_model, lora_how = lcm_model(ctx, models)
    base_model = models.unet.comfy
    if compile_backend:
        (lora_model,) = host.call("TorchCompileModel", model=lora_model, backend=compile_backend)
        (base_model,) = host.call("TorchCompileModel", model=models.fresh_comfy_unet(), backend=compile_backend)

    def encode():
        (pos,) = host.call("CLIPTextEncode", clip=models.clip, text=PROMPT)
        (neg,) = host.call("CLIPTextEncode", clip=models.clip, text=NEGATIVE)
        return pos, neg

    sampler_name, lcm_sample = pack_lcm_sampler(ctx, lora_model, latent)

    def lcm_graph():
        return host.call("VAEDecode", vae=models.vae, samples=lcm_sample(*encode()))[0]

    def baseline_graph():
        samples = _ksampler(ctx, base_model, *encode(), latent, BASELINE["steps"], BASELINE["cfg"],
                            BASELINE["sampler"], BASELINE["scheduler"])
        return host.call("VAEDecode", vae=models.vae, samples=samples)[0]

    arms = {"25-step DPM++ 2M karras, cfg 7.5 (core KSampler)": baseline_graph}
    if sampler_name:
        arms[f"LCM-LoRA 4-step cfg 1 ({lora_how} + {sampler_name})"] = lcm_graph
    results = timing.interleave(arms, ctx.device, ctx.short_repeats, ctx.warmup)
    baseline = results["25-step DPM++ 2M karras, cfg 7.5 (core KSampler)"]
    notes = {name: f"speed-up {baseline.median / r.median:.2f}×" for name, r in results.items()
             if r.seconds and name != baseline.name}
    if not sampler_name:
        results["LCM-LoRA 4-step"] = timing.ArmResult("LCM-LoRA 4-step", skipped="no pack LCM sampling node")
    how = f", both UNets through TorchCompileModel({compile_backend})" if compile_backend else ", eager"
    ctx.report("e2e", timing.table(
        f"{family_name}: end to end {size}² (CLIP encode ×2, sample, full SD VAE decode; random weights{how})",
        results, reference=baseline.name, notes=notes),
        {"family": family_name, **{k: v.seconds for k, v in results.items()}})


def section_compile(ctx: BenchContext, family_name: str, backends: tuple[str, ...] = ("inductor",)) -> None:
    """The pack's 4-step LCM graph with core's TorchCompileModel (each backend on its own UNet copy) vs
    eager, interleaved after the first (compiling) call, whose time is reported separately."""
    if ctx.device == "cpu":
        ctx.report("compile", f"### {family_name}: TorchCompileModel\n\nskipped on CPU (smoke run)\n")
        return
    models = ctx.models(family_name)
    cond, _ = synthetic_conditioning(models.family, 1, ctx.device, ctx.dtype)
    (latent,) = ctx.host.call("EmptyLatentImage", width=models.family.image_size,
                              height=models.family.image_size, batch_size=1)
    eager_name, eager_sample = pack_lcm_sampler(ctx, models.unet.comfy, latent)
    if eager_sample is None:
        ctx.report("compile", f"### {family_name}: TorchCompileModel\n\nskipped: no pack LCM sampling node\n")
        return
    arms = {f"{eager_name} (eager)": lambda: eager_sample(cond, cond)}
    firsts, failures = {}, {}
    for backend in backends:
        name = f"{eager_name} + TorchCompileModel({backend})"
        try:
            (compiled,) = ctx.host.call("TorchCompileModel", model=models.fresh_comfy_unet(), backend=backend)
            _, sample = pack_lcm_sampler(ctx, compiled, latent)
            start = time.perf_counter()
            sample(cond, cond)
            timing.synchronize(ctx.device)
            firsts[name] = time.perf_counter() - start
            arms[name] = lambda sample=sample: sample(cond, cond)
        except Exception as error:  # noqa: BLE001  (a backend that fails to compile is a result)
            LOG.exception("TorchCompileModel(%s) failed", backend)
            failures[name] = timing.ArmResult(name, error=f"{type(error).__name__}: {error}")
    results = timing.interleave(arms, ctx.device, ctx.repeats, ctx.warmup)
    results.update(failures)
    notes = {name: f"first call (compiles): {seconds:.1f} s" for name, seconds in firsts.items()}
    ctx.report("compile", timing.table(f"{family_name}: 4-step LCM with core TorchCompileModel", results,
                                       reference=f"{eager_name} (eager)", notes=notes),
               {"family": family_name, "first_call_s": firsts, **{k: v.seconds for k, v in results.items()}})
    torch.cuda.empty_cache()
