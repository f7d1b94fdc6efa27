"""Sections: eager UNet step, 4-step LCM sampling (pack / core / diffusers / floor), end to end, compile.

Every arm calls the nodes the way a re-queued graph runs them: nodes whose inputs did not change
(loaders, ModelSampling patches, schedulers) are cached by ComfyUI's executor, so they are built once
outside the timed call; the timed call is what re-runs (text encode, sampler, decode).
"""
from __future__ import annotations

import logging

import torch

from . import synthetic, timing
from .context import BenchContext, FamilyModels
from .host import NodeMissing

LOG = logging.getLogger(__name__)
LCM_STEPS = 4
SEED = 42


def _unet_inputs(models: FamilyModels, batch: int, device, dtype):
    family = models.family
    generator = torch.Generator(device="cpu").manual_seed(7)
    x = torch.randn(synthetic.latent_shape(family, batch), generator=generator).to(device, dtype)
    t = torch.full((batch,), 999.0, device=device)
    context = torch.randn(batch, 77, family.context_dim, generator=generator).to(device, dtype)
    comfy_kwargs = {"context": context}
    diffusers_kwargs = {"encoder_hidden_states": context}
    if family.pooled_dim:
        text_embeds = torch.randn(batch, family.pooled_dim, generator=generator).to(device, dtype)
        side = family.image_size
        time_ids = torch.tensor([[side, side, 0, 0, side, side]] * batch, device=device, dtype=dtype)
        diffusers_kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        comfy_kwargs["y"] = _sdxl_vector(models, text_embeds, time_ids)
    return x, t, comfy_kwargs, diffusers_kwargs


def _sdxl_vector(models: FamilyModels, text_embeds, time_ids):
    """ComfyUI's SDXL ``y``: pooled text embedding ++ Fourier embeddings of the six size ids (as diffusers)."""
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

    flat = time_ids.flatten().float()
    embedded = timestep_embedding(flat, 256).reshape(time_ids.shape[0], -1).to(text_embeds)
    return torch.cat([text_embeds, embedded], dim=1)


def unet_step_arms(ctx: BenchContext, models: FamilyModels, batch: int):
    """Callables for one eager UNet forward in ComfyUI and in diffusers (same weights, same inputs)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([models.unet.comfy])
    comfy_unet = models.unet.comfy.model.diffusion_model
    x, t, comfy_kwargs, diffusers_kwargs = _unet_inputs(models, batch, ctx.device, ctx.dtype)

    @torch.inference_mode()
    def comfy_step():
        return comfy_unet(x, timesteps=t, **comfy_kwargs)

    @torch.inference_mode()
    def diffusers_step():
        return models.unet.diffusers(x, t, return_dict=False, **diffusers_kwargs)[0]

    return comfy_step, diffusers_step


def parity(comfy_step, diffusers_step) -> float:
    """Relative L2 difference of the two UNets' outputs: proves the weights are the same."""
    a, b = comfy_step().float(), diffusers_step().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def section_unet_step(ctx: BenchContext, family_name: str) -> None:
    models = ctx.models(family_name)
    results, notes = {}, {}
    for batch in (1, 2):
        comfy_step, diffusers_step = unet_step_arms(ctx, models, batch)
        rel = parity(comfy_step, diffusers_step)
        arms = {f"ComfyUI UNet b{batch}": comfy_step, f"diffusers UNet b{batch}": diffusers_step}
        results.update(timing.interleave(arms, ctx.device, ctx.repeats * 2, ctx.warmup))
        notes[f"diffusers UNet b{batch}"] = f"rel. L2 diff vs ComfyUI output {rel:.1e}"
    ctx.report("unet_step", timing.table(
        f"{family_name}: eager UNet step ({models.unet.parameters / 1e6:.0f} M params, "
        f"{models.family.image_size}², {ctx.dtype})", results, reference="ComfyUI UNet b1", notes=notes),
        {"family": family_name, **{k: v.seconds for k, v in results.items()}})


def _latent(models: FamilyModels, batch: int = 1) -> dict:
    return {"samples": torch.zeros(synthetic.latent_shape(models.family, batch))}


def _ksampler(ctx, model, positive, negative, latent, steps, cfg, sampler, scheduler):
    return ctx.host.call("KSampler", model=model, seed=SEED, steps=steps, cfg=cfg, sampler_name=sampler,
                         scheduler=scheduler, positive=positive, negative=negative, latent_image=latent,
                         denoise=1.0)[0]


def lcm_sampling_arms(ctx: BenchContext, model, latent) -> tuple[dict, dict]:
    """4-step LCM samplers ``fn(positive, negative) -> LATENT`` through the pack's nodes and core's manual
    path; the model patches are built once (the executor caches them). A missing node skips its arm.

    The pack's arms sample the model as ``LCMPack_ModelSamplingLCM`` (and ``LCMLoraLoader``, which sets the same
    sampling) hands it on, except the first, which gives ``KSamplerLCM`` a plain model.
    """
    host = ctx.host
    arms, skipped = {}, {}

    def add(name, builder):
        try:
            arms[name] = builder()
        except NodeMissing as missing:
            skipped[name] = str(missing)

    def patched():
        return host.call("LCMPack_ModelSamplingLCM", model=model)[0]

    def pack_ksampler(on_model=None):
        host.require("LCMPack_KSamplerLCM")
        target = model if on_model is None else on_model
        return lambda pos, neg: host.call("LCMPack_KSamplerLCM", model=target, seed=SEED, steps=LCM_STEPS,
                                          cfg=1.0, positive=pos, negative=neg, latent_image=latent,
                                          denoise=1.0)[0]

    def pack_model_sampling():
        lcm_model = patched()
        return lambda pos, neg: _ksampler(ctx, lcm_model, pos, neg, latent, LCM_STEPS, 1.0, "lcm", "simple")

    def pack_custom():
        host.require("LCMPack_LCMSampler", "LCMPack_LCMScheduler")
        lcm_model = patched()
        (sampler,) = host.call("LCMPack_LCMSampler")
        (sigmas,) = host.call("LCMPack_LCMScheduler", model=lcm_model, steps=LCM_STEPS)
        return lambda pos, neg: host.call("SamplerCustom", model=lcm_model, add_noise=True, noise_seed=SEED,
                                          cfg=1.0, positive=pos, negative=neg, sampler=sampler, sigmas=sigmas,
                                          latent_image=latent)[0]

    def core_manual():
        (core_patched,) = host.call("ModelSamplingDiscrete", model=model, sampling="lcm", zsnr=False)
        return lambda pos, neg: _ksampler(ctx, core_patched, pos, neg, latent, LCM_STEPS, 1.0, "lcm", "simple")

    add("pack KSamplerLCM", pack_ksampler)
    add("pack ModelSamplingLCM → KSamplerLCM (sampling preset, as after LCMLoraLoader)",
        lambda: pack_ksampler(patched()))
    add("pack ModelSamplingLCM + KSampler lcm/simple", pack_model_sampling)
    add("pack ModelSamplingLCM + LCMSampler + LCMScheduler (SamplerCustom)", pack_custom)
    add("core ModelSamplingDiscrete(lcm) + KSampler lcm/simple", core_manual)
    return arms, skipped


def _core_cond_batch(args):
    """A calc-cond-batch function that is core's own batching (switches the pack's direct path off)."""
    import comfy.samplers

    return comfy.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"],
                                          args["model_options"])


def ablation_arms(ctx: BenchContext, model, latent) -> dict:
    """``KSamplerLCM`` on the preset model with one of the pack's sampling-speed measures undone: core's
    per-step conditioning batch instead of the direct single-conditioning path, the LCM sampling tables on the
    host instead of the load device, or both (the pack before these measures)."""
    import copy

    if not ctx.host.has("LCMPack_KSamplerLCM"):
        return {}
    (preset,) = ctx.host.call("LCMPack_ModelSamplingLCM", model=model)

    def variant(core_batch: bool, host_tables: bool):
        clone = preset.clone()
        if core_batch:
            clone.set_model_sampler_calc_cond_batch_function(_core_cond_batch)
        if host_tables:
            clone.add_object_patch("model_sampling", copy.deepcopy(preset.get_model_object("model_sampling")).cpu())
        return lambda pos, neg: ctx.host.call("LCMPack_KSamplerLCM", model=clone, seed=SEED, steps=LCM_STEPS,
                                              cfg=1.0, positive=pos, negative=neg, latent_image=latent,
                                              denoise=1.0)[0]

    return {"ablation: preset → KSamplerLCM with core's cond batching": variant(True, False),
            "ablation: preset → KSamplerLCM with LCM tables on the host": variant(False, True),
            "ablation: preset → KSamplerLCM with both undone (pack before)": variant(True, True)}


def diffusers_lcm_arm(ctx: BenchContext, models: FamilyModels, diffusers_kwargs: dict):
    from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if models.diffusers_vae is None:
        models.diffusers_vae, models.vae = synthetic.build_vae(ctx.device, ctx.dtype)
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False)
    common = {"vae": models.diffusers_vae, "unet": models.unet.diffusers, "scheduler": scheduler}
    if models.family.pooled_dim:
        pipe = StableDiffusionXLPipeline(text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                         **common)
    else:
        pipe = StableDiffusionPipeline(text_encoder=None, tokenizer=None, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False, **common)
    pipe.set_progress_bar_config(disable=True)
    size = models.family.image_size

    def run():
        generator = torch.Generator(device=ctx.device).manual_seed(SEED)
        return pipe(num_inference_steps=LCM_STEPS, guidance_scale=1.0, height=size, width=size,
                    output_type="latent", generator=generator, **diffusers_kwargs).images

    return run


def section_lcm_sampling(ctx: BenchContext, family_name: str) -> None:
    models = ctx.models(family_name)
    cond, diffusers_kwargs = synthetic.synthetic_conditioning(models.family, 1, ctx.device, ctx.dtype)
    samplers, skipped = lcm_sampling_arms(ctx, models.unet.comfy, _latent(models))
    samplers.update(ablation_arms(ctx, models.unet.comfy, _latent(models)))
    arms = {name: (lambda fn=fn: fn(cond, cond)) for name, fn in samplers.items()}
    arms["diffusers StableDiffusion(XL)Pipeline + LCMScheduler"] = diffusers_lcm_arm(ctx, models, diffusers_kwargs)
    comfy_step, _ = unet_step_arms(ctx, models, 1)
    arms["UNet step ×1 (ComfyUI, eager)"] = comfy_step
    results = timing.interleave(arms, ctx.device, ctx.repeats, ctx.warmup)
    floor = timing.scaled(results.pop("UNet step ×1 (ComfyUI, eager)"), LCM_STEPS, "floor: 4 × UNet step")
    results = {floor.name: floor, **results}
    for name, reason in skipped.items():
        results[name] = timing.ArmResult(name, skipped=reason)
    ctx.report("lcm4", timing.table(f"{family_name}: 4-step LCM sampling, batch 1, cfg 1 "
                                    f"({models.family.image_size}²)", results, reference=floor.name),
               {"family": family_name, **{k: v.seconds for k, v in results.items()}})
