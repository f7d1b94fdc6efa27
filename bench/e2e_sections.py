"""Sections: end-to-end graph (text encode, sample, VAE decode) LCM-LoRA 4 steps vs 25-step DPM++ 2M cfg 7.5,
and the pack's LCM graph under core's ``TorchCompileModel``.

End to end, every part (each text encode, the decode, each sampler) and the full graph in three re-run scenarios
(``bench/e2e_graph.py``: new seed, new prompt, cold) are timed interleaved in the same rounds, so the fixed costs
are measured, not derived; the dtypes ComfyUI picked are reported with them.

The LCM arm samples a LoRA-patched copy of the UNet and the baseline the unpatched one: two ComfyUI
copies of the same weights stay loaded, so interleaving the arms never re-patches weights (the apply cost
is measured on its own in the LoRA section).
"""
from __future__ import annotations

import logging
import time

import torch

from . import synthetic, timing
from .context import BenchContext
from .e2e_graph import (
    Graph,
    SamplerArm,
    build_arms,
    graph_name,
    graph_notes,
    part_names,
    picked_dtypes,
    scenario_table,
)
from .lora_sections import benchmark_loras, core_lora_chain, pack_lcm_lora
from .sampling_sections import LCM_STEPS, SEED, _ksampler, lcm_sampling_arms
from .synthetic import synthetic_conditioning

LOG = logging.getLogger(__name__)
PROMPT = "a photograph of an astronaut riding a horse, detailed, 35mm"
NEGATIVE = "blurry, low quality"
BASELINE = {"steps": 25, "cfg": 7.5, "sampler": "dpmpp_2m", "scheduler": "karras"}
E2E_NOTES = ("\nEvery row is measured in the same interleaved rounds (median); \"parts sum\" adds the parts a "
             "scenario re-runs, timed on their own. At cfg 1 KSamplerLCM does not request its lazy negative input, "
             "so the 4-step graph never encodes the negative; the 25-step graph encodes it in the cold scenario. "
             "The TAESD row uses a different (preview-quality) decoder and is not the target row.\n")


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


def lcm_arm(ctx: BenchContext, model, latent, label_suffix: str) -> SamplerArm | None:
    """The pack's 4-step LCM sampler as a graph arm; it asks for the negative as the executor would ask
    KSamplerLCM (``check_lazy_status``); the fallback (core KSampler) always evaluates it."""
    sampler_name, sample = pack_lcm_sampler(ctx, model, latent)
    if sample is None:
        return None
    if sampler_name != "pack KSamplerLCM":
        return SamplerArm(f"LCM-LoRA 4-step cfg 1 ({label_suffix} + {sampler_name})", sample, lambda positive: True)

    def wants_negative(positive) -> bool:
        return "negative" in ctx.host.lazy_requests("LCMPack_KSamplerLCM", model=model, positive=positive,
                                                    negative=None, latent_image=latent, seed=SEED,
                                                    steps=LCM_STEPS, cfg=1.0)

    return SamplerArm(f"LCM-LoRA 4-step cfg 1 ({label_suffix} + KSamplerLCM)", sample, wants_negative)


SMOKE_BASELINE_STEPS = 2  # the CPU smoke run checks the section runs; 25 tiny-UNet steps would only cost CI time


def baseline_arm(ctx: BenchContext, model, latent) -> SamplerArm:
    steps = SMOKE_BASELINE_STEPS if ctx.smoke else BASELINE["steps"]

    def sample(positive, negative):
        return _ksampler(ctx, model, positive, negative, latent, steps, BASELINE["cfg"],
                         BASELINE["sampler"], BASELINE["scheduler"])

    return SamplerArm("25-step DPM++ 2M karras cfg 7.5 (core KSampler)", sample, lambda positive: True)


def e2e_graph(ctx: BenchContext, models) -> Graph:
    """Text encodes (run once now for the cached results) and the full-VAE decode of the family."""
    host = ctx.host

    def encode_positive():
        return host.call("CLIPTextEncode", clip=models.clip, text=PROMPT)[0]

    def encode_negative():
        return host.call("CLIPTextEncode", clip=models.clip, text=NEGATIVE)[0]

    def decode(samples):
        return host.call("VAEDecode", vae=models.vae, samples=samples)[0]

    return Graph(encode_positive, encode_negative, decode, encode_positive(), encode_negative())


def taesd_decoder(ctx: BenchContext, models):
    """VAEDecode with a random-weight TAESD (built once per family)."""
    if models.taesd is None:
        models.taesd = synthetic.build_taesd(models.family)
    return lambda samples: ctx.host.call("VAEDecode", vae=models.taesd, samples=samples)[0]


def section_e2e(ctx: BenchContext, family_name: str, compile_backend: str | None = None) -> None:
    """Parts and full graphs (three re-run scenarios), 25-step baseline vs LCM-LoRA 4-step, interleaved.
    ``compile_backend`` set: both arms' UNets go through core's TorchCompileModel first."""
    if compile_backend and ctx.device == "cpu":
        ctx.report("e2e", f"### {family_name}: end to end with TorchCompileModel\n\nskipped on CPU (smoke run)\n")
        return
    models = ctx.models(family_name, with_clip_vae=True)
    size = models.family.image_size
    (latent,) = ctx.host.call("EmptyLatentImage", width=size, height=size, batch_size=ctx.e2e_batch)
    lora_model, lora_how = lcm_model(ctx, models)
    base_model = models.unet.comfy
    if compile_backend:
        (lora_model,) = ctx.host.call("TorchCompileModel", model=lora_model, backend=compile_backend)
        (base_model,) = ctx.host.call("TorchCompileModel", model=models.fresh_comfy_unet(), backend=compile_backend)
    graph, baseline = e2e_graph(ctx, models), baseline_arm(ctx, base_model, latent)
    lcm = lcm_arm(ctx, lora_model, latent, lora_how)
    decode_latent = graph.sampler_alone(lcm or baseline)
    arms = build_arms(graph, baseline, lcm, decode_latent, taesd_decoder(ctx, models))
    results = timing.interleave(arms, ctx.device, ctx.short_repeats, ctx.warmup)
    names = part_names(baseline, lcm)
    how = f", both UNets through TorchCompileModel({compile_backend})" if compile_backend else ", eager"
    how += f", batch {ctx.e2e_batch}" if ctx.e2e_batch != 1 else ""
    dtypes = picked_dtypes(models, lora_model)
    title = f"{family_name}: end to end {size}² (CLIP encode, sample, full SD VAE decode; random weights{how})"
    markdown = timing.table(title, results, reference=graph_name("cold", baseline),
                            notes=graph_notes(results, names, graph, baseline, lcm))
    markdown += "\nComfyUI picked: " + "; ".join(f"{k} {v}" for k, v in dtypes.items()) + ".\n"
    speedups = {}
    if lcm is None:
        markdown += "\nLCM arm SKIPPED: no pack LCM sampling node registered.\n"
    else:
        summary, speedups = scenario_table(f"{family_name}: end-to-end speed-up per re-run scenario{how}",
                                           results, names, baseline, lcm)
        markdown += "\n" + summary + E2E_NOTES
    ctx.report("e2e", markdown, {"family": family_name, "dtypes": dtypes, "speedups": speedups,
                                 **{k: v.seconds for k, v in results.items()}})


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
