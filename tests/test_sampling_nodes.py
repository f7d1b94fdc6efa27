"""The sampling nodes inside real ComfyUI: schema, grid, model-sampling detection, and parity with diffusers.

Parity runs the generated SD1.5-family UNet twice with identical weights: in ComfyUI through the pack's nodes,
and as a diffusers ``UNet2DConditionModel`` (weights mapped with ``comfy.utils.unet_to_diffusers``) inside
diffusers' ``LCMScheduler`` / ``TCDScheduler`` loop. Noise: ComfyUI draws the initial noise with
``torch.manual_seed(seed)`` and the per-step noise from a generator seeded with the same seed; the diffusers
side uses the same two draws. Latents compare after ``process_in`` (×0.18215).
"""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from diffusers import LCMScheduler, TCDScheduler, UNet2DConditionModel
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.samplers.timesteps import lcm_timesteps

PACK_SAMPLING_NODES = ["LCMPack_ModelSamplingLCM", "LCMPack_LCMSampler", "LCMPack_LCMScheduler",
                       "LCMPack_KSamplerLCM"]
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SEED = 42
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]


@pytest.fixture(scope="module")
def diffusers_unet(sd15):
    """A diffusers UNet with exactly the ComfyUI model's weights."""
    import comfy.utils as comfy_utils

    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(320,),
                                down_block_types=("CrossAttnDownBlock2D",), up_block_types=("CrossAttnUpBlock2D",),
                                layers_per_block=1, cross_attention_dim=768, attention_head_dim=8)
    ldm = sd15.model.diffusion_model.state_dict()
    names = comfy_utils.unet_to_diffusers(SD15_UNET_CONFIG)
    unet.load_state_dict({k: ldm[names[k]].float() for k in unet.state_dict()}, strict=True)
    return unet.eval()


def _conditioning(seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(1, 77, 768, generator=generator), {}]]


def _latent(samples):
    return {"samples": samples}


def _ksampler(comfy, model, latent, steps=4, sampler="lcm", gamma=0.3, denoise=1.0, cfg=1.0):
    (out,) = comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=_conditioning(), negative=_conditioning(9),
                            latent_image=latent, seed=SEED, steps=steps, cfg=cfg, sampler=sampler, gamma=gamma,
                            denoise=denoise)
    return out["samples"]


@torch.no_grad()
def _diffusers_sample(unet, scheduler, init_latent, strength, step_kwargs):
    """diffusers' LCM/TCD pipeline loop (cfg 1) on VP latents, with ComfyUI's noise draws."""
    shape = init_latent.shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    timesteps = scheduler.timesteps
    latents = noise if strength == 1.0 else scheduler.add_noise(init_latent, noise, timesteps[:1])
    generator = torch.Generator().manual_seed(SEED)
    context = _conditioning()[0][0]
    for t in timesteps:
        model_output = unet(latents, t, encoder_hidden_states=context).sample
        latents = scheduler.step(model_output, t, latents, generator=generator, return_dict=False, **step_kwargs)[0]
    return latents


def _assert_close(ours, reference):
    relative = ((ours - reference).norm() / reference.norm()).item()
    assert relative < TOLERANCE, relative


def test_nodes_are_registered_with_tooltips_everywhere(comfy):
    for node_id in PACK_SAMPLING_NODES:
        schema = comfy.node_class(node_id).define_schema()
        assert schema.description
        for item in schema.inputs:
            assert item.tooltip, f"{node_id}.{item.id} has no tooltip"


def test_model_sampling_node_keeps_its_public_inputs(comfy):
    schema = comfy.node_class("LCMPack_ModelSamplingLCM").define_schema()
    assert [i.id for i in schema.inputs] == ["model", "original_inference_steps", "timestep_scaling", "sigma_data"]


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_scheduler_sigmas_are_exactly_the_lcm_grid(comfy, sd15, steps):
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    for model in (patched, sd15):  # a patched model and an unpatched one (default 50 grid)
        (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=model, steps=steps, denoise=1.0,
                                   original_inference_steps=0)
        sampling = model.get_model_object("model_sampling")
        assert sigmas[-1] == 0
        assert sampling.timestep(sigmas[:-1]).tolist() == lcm_timesteps(steps)


def test_scheduler_follows_the_model_constants(comfy, sd15):
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=25,
                                timestep_scaling=10.0, sigma_data=0.5)
    (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=patched, steps=4, denoise=1.0,
                               original_inference_steps=0)
    timesteps = patched.get_model_object("model_sampling").timestep(sigmas[:-1]).tolist()
    assert timesteps == lcm_timesteps(4, 25) == [999, 759, 519, 279]
    with pytest.raises(ValueError, match="does not match the model's LCM model sampling"):
        comfy.run_node("LCMPack_LCMScheduler", model=patched, steps=4, denoise=1.0, original_inference_steps=50)


def test_scheduler_follows_core_lcm_sampling(comfy, sd15):
    (core,) = comfy.run_node("ModelSamplingDiscrete", model=sd15, sampling="lcm", zsnr=False)
    (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=core, steps=4, denoise=0.5,
                               original_inference_steps=0)
    assert core.get_model_object("model_sampling").timestep(sigmas[:-1]).tolist() == lcm_timesteps(4, 50, 0.5)


def test_custom_timesteps_off_grid_need_an_unpatched_model(comfy, sd15):
    (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=sd15, steps=4, denoise=1.0, original_inference_steps=0,
                               custom_timesteps="999, 749, 499, 249")
    assert sd15.get_model_object("model_sampling").timestep(sigmas[:-1]).tolist() == [999, 749, 499, 249]
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    with pytest.raises(ValueError, match="not on this model's sampling grid"):
        comfy.run_node("LCMPack_LCMScheduler", model=patched, steps=4, denoise=1.0, original_inference_steps=0,
                       custom_timesteps="999, 749, 499, 249")


@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_ksampler_lcm_equals_diffusers_unet_and_scheduler(comfy, sd15, diffusers_unet, denoise):
    # txt2img from an empty latent; img2img from an "encoded image" (VAE units)
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * 4.0 * (denoise < 1.0)
    ours = _ksampler(comfy, sd15, _latent(init), steps=4, denoise=denoise)
    scheduler = LCMScheduler(**SD_BETAS)
    scheduler.set_timesteps(4, strength=denoise)
    reference = _diffusers_sample(diffusers_unet, scheduler, init * 0.18215, denoise, {})
    _assert_close(ours * 0.18215, reference)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_ksampler_tcd_equals_diffusers_unet_and_scheduler(comfy, sd15, diffusers_unet, gamma):
    empty = torch.zeros(1, 4, 8, 8)
    ours = _ksampler(comfy, sd15, _latent(empty), steps=4, sampler="tcd", gamma=gamma)
    scheduler = TCDScheduler(**SD_BETAS)
    scheduler.set_timesteps(4)
    reference = _diffusers_sample(diffusers_unet, scheduler, empty, 1.0, {"eta": gamma})
    _assert_close(ours * 0.18215, reference)


def test_ksampler_v_prediction_equals_diffusers(comfy, sd15, diffusers_unet):
    (v_model,) = comfy.run_node("ModelSamplingDiscrete", model=sd15, sampling="v_prediction", zsnr=False)
    ours = _ksampler(comfy, v_model, _latent(torch.zeros(1, 4, 8, 8)), steps=2)
    scheduler = LCMScheduler(prediction_type="v_prediction", **SD_BETAS)
    scheduler.set_timesteps(2)
    reference = _diffusers_sample(diffusers_unet, scheduler, torch.zeros(1, 4, 8, 8), 1.0, {})
    _assert_close(ours * 0.18215, reference)


def test_ksampler_patches_a_clone_and_follows_an_existing_patch(comfy, sd15):
    before = sd15.get_model_object("model_sampling")
    empty = _latent(torch.zeros(1, 4, 8, 8))
    plain = _ksampler(comfy, sd15, empty, steps=2)
    assert sd15.get_model_object("model_sampling") is before, "input model was mutated"
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    assert torch.equal(plain, _ksampler(comfy, patched, empty, steps=2))
    (patched25,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=25,
                                  timestep_scaling=10.0, sigma_data=0.5)
    on_25_grid = _ksampler(comfy, patched25, empty, steps=4)
    (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=patched25, steps=4, denoise=1.0,
                               original_inference_steps=0)
    (sampler,) = comfy.run_node("LCMPack_LCMSampler", sampler="lcm", gamma=0.3)
    custom = comfy.run_node("SamplerCustom", model=patched25, add_noise=True, noise_seed=SEED, cfg=1.0,
                            positive=_conditioning(), negative=_conditioning(9), sampler=sampler, sigmas=sigmas,
                            latent_image=empty)[0]["samples"]
    assert torch.equal(on_25_grid, custom)


def test_ksampler_reports_progress_per_step(comfy, sd15):
    import comfy.utils as comfy_utils

    seen = []
    previous = comfy_utils.PROGRESS_BAR_HOOK
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        _ksampler(comfy, sd15, _latent(torch.zeros(1, 4, 8, 8)), steps=4)
    finally:
        comfy_utils.set_progress_bar_global_hook(previous)
    assert (4, 4) in seen and (1, 4) in seen


def test_tcd_rejects_a_flow_model(comfy, sd15):
    (flow,) = comfy.run_node("ModelSamplingSD3", model=sd15, shift=3.0)
    with pytest.raises(ValueError, match="discrete eps or v-prediction"):
        _ksampler(comfy, flow, _latent(torch.zeros(1, 4, 8, 8)), steps=2)


def _custom_sample(comfy, model, sampler_name, gamma, steps=4):
    (sigmas,) = comfy.run_node("LCMPack_LCMScheduler", model=model, steps=steps, denoise=1.0,
                               original_inference_steps=0)
    (sampler,) = comfy.run_node("LCMPack_LCMSampler", sampler=sampler_name, gamma=gamma)
    return comfy.run_node("SamplerCustom", model=model, add_noise=True, noise_seed=SEED, cfg=1.0,
                          positive=_conditioning(), negative=_conditioning(9), sampler=sampler, sigmas=sigmas,
                          latent_image=_latent(torch.zeros(1, 4, 8, 8)))[0]["samples"]


def test_tcd_sampler_on_core_lcm_patch_uses_the_full_training_schedule(comfy, sd15):
    """Core's distilled sampling keeps only 50 sigmas; TCD's σ_s needs all 1000 and must still be exact-ish."""
    (core,) = comfy.run_node("ModelSamplingDiscrete", model=sd15, sampling="lcm", zsnr=False)
    on_core = _custom_sample(comfy, core, "tcd", 0.3)
    plain = _custom_sample(comfy, sd15, "tcd", 0.3)
    relative = ((on_core - plain).norm() / plain.norm()).item()
    assert relative < 1e-4, relative  # only core's boundary term (c_skip ≤ 7e-6 at t ≥ 19) differs


def test_ksampler_runs_an_sdxl_family_model(comfy):
    from conftest import VEGA_UNET

    (vega,) = comfy.run_node("UNETLoader", unet_name=VEGA_UNET, weight_dtype="default")
    generator = torch.Generator().manual_seed(1)
    cond = [[torch.randn(1, 77, 2048, generator=generator), {"pooled_output": torch.randn(1, 1280, generator=generator),
                                                              "width": 64, "height": 64}]]
    (out,) = comfy.run_node("LCMPack_KSamplerLCM", model=vega, positive=cond, negative=cond,
                            latent_image=_latent(torch.zeros(1, 4, 8, 8)), seed=SEED, steps=2, cfg=1.0,
                            sampler="lcm", gamma=0.3, denoise=1.0)
    assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    assert vega.get_model_object("model_sampling").sigmas.numel() == 1000, "input model was mutated"
