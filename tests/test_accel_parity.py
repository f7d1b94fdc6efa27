"""Every accelerator preset equals its authors' diffusers setup (scheduler class + config as the card gives it).

Pure math, like ``test_lcm_sampler_parity``: both sides run the same fixed nonlinear stand-in for the UNet (read
as eps, v or x0) and the same noise. The pack side is exactly what ``KSampler (LCM)`` runs for a preset: the
preset's model sampling (``comfy_presets.make_preset_sampling`` / the LCM grid), its timesteps
(``presets.preset_timesteps``) and its loop (the pack's LCM/TCD/DDIM loops, core's ``sample_euler`` /
``sample_euler_ancestral``), started the way the preset's KSAMPLER starts (``max_denoise``). The diffusers side is the
pipeline loop: ``init_noise_sigma`` / ``add_noise``, ``scale_model_input``, ``step(generator=…)``.
Tolerance: 1e-5 relative (fp32), timesteps equal.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
)
from harness.fake_unet import SHAPE, fake_unet, pack_denoiser
from lcm_lora_pack.devkit.host import prepare_import

prepare_import()

import comfy.k_diffusion.sampling as k_sampling  # noqa: E402
from lcm_lora_pack.host.comfy_model_sampling import make_lcm_model_sampling, schedule_sigmas  # noqa: E402
from lcm_lora_pack.host.comfy_presets import ddim_land_sigmas, make_preset_sampling  # noqa: E402
from lcm_lora_pack.samplers.ddim_sampler import ddim_loop  # noqa: E402
from lcm_lora_pack.samplers.lcm_sampler import lcm_loop, tcd_loop  # noqa: E402
from lcm_lora_pack.samplers.presets import PRESETS, PresetError, preset_for_kind, preset_timesteps  # noqa: E402

# The SD1.5 / SDXL pipelines' scheduler config (scheduler_config.json of both base repos) that the cards'
# ``Scheduler.from_config(pipe.scheduler.config, …)`` start from.
BASE_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "v_prediction": "v_prediction", "x0": "sample"}
SEED = 1234
TOLERANCE = 1e-5


class _Wrapped:
    """What core's k-diffusion samplers call: ``model(x, sigma)`` plus ``inner_model.inner_model.model_sampling``."""

    def __init__(self, sampling):
        self.denoise = pack_denoiser(sampling)
        self.inner_model = type("Inner", (), {"inner_model": type("Base", (), {"model_sampling": sampling})()})()

    def __call__(self, x, sigma, **_):
        return self.denoise(x, sigma)


def _popping_noise(count=16):
    generator = torch.Generator().manual_seed(SEED)
    noises = [torch.randn(SHAPE, generator=generator) for _ in range(count)]
    return lambda sigma, sigma_next: noises.pop(0)


def _inputs():
    generator = torch.Generator().manual_seed(7)
    return torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator) * 0.8


def _diffusers_run(scheduler, noise, init, strength, step_kwargs, timesteps=None):
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    latents = noise * scheduler.init_noise_sigma if strength == 1.0 else scheduler.add_noise(init, noise,
                                                                                              timesteps[:1])
    generator = torch.Generator().manual_seed(SEED)
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        output = fake_unet(model_input, t.view(1).expand(SHAPE[0]))
        latents = scheduler.step(output, t, latents, generator=generator, return_dict=False, **step_kwargs)[0]
    return latents


def _img2img_timesteps(scheduler, steps, strength):
    """``StableDiffusionImg2ImgPipeline.get_timesteps`` (DDIM / Euler pipelines)."""
    init_timestep = min(int(steps * strength), steps)
    return scheduler.timesteps[steps - init_timestep:]


def _assert_close(ours, reference):
    relative = ((ours - reference).norm() / reference.norm()).item()
    assert relative < TOLERANCE, relative


def _pack_start(noise, init, sigmas, strength, max_denoise=True):
    if strength == 1.0:
        return noise * ((1.0 + sigmas[0] ** 2) ** 0.5 if max_denoise else sigmas[0])
    return init + sigmas[0] * noise


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("name, steps", [("hyper-sd", 1), ("hyper-sd", 2), ("hyper-sd", 4), ("hyper-sd", 8),
                                         ("hyper-sd-cfg", 8), ("hyper-sd-cfg", 12), ("hyper-sd", 6), ("pcm", 2),
                                         ("pcm", 4), ("pcm", 8), ("pcm", 16), ("pcm-normalcfg", 8),
                                         ("pcm-normalcfg", 16)])
def test_ddim_trailing_presets_equal_diffusers_ddim_trailing(name, steps, strength, prediction):
    if steps * strength < 1:
        pytest.skip("strength keeps no step")
    scheduler = DDIMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing",
                                          prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps)
    reference_steps = scheduler.timesteps if strength == 1.0 else _img2img_timesteps(scheduler, steps, strength)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {"eta": 0.0}, reference_steps)

    sampling = make_preset_sampling(None, PRESETS[name].model_sampling, prediction)
    timesteps = preset_timesteps(PRESETS[name], steps, strength)
    assert timesteps == reference_steps.tolist()
    sigmas = schedule_sigmas(sampling, timesteps)
    x = _pack_start(noise, init, sigmas, strength)
    ours = ddim_loop(pack_denoiser(sampling), x, sigmas, ddim_land_sigmas(sampling, timesteps, steps), disable=True)
    _assert_close(ours, reference)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("name, steps, scheduler_class", [
    ("lightning", 2, EulerDiscreteScheduler), ("lightning", 4, EulerDiscreteScheduler),
    ("lightning", 8, EulerDiscreteScheduler), ("turbo", 1, EulerAncestralDiscreteScheduler),
    ("turbo", 2, EulerAncestralDiscreteScheduler), ("turbo", 4, EulerAncestralDiscreteScheduler)])
def test_euler_trailing_presets_equal_diffusers(name, steps, scheduler_class, strength, prediction):
    if steps * strength < 1:
        pytest.skip("strength keeps no step")
    scheduler = scheduler_class.from_config(BASE_CONFIG, timestep_spacing="trailing",
                                            prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps)
    reference_steps = scheduler.timesteps if strength == 1.0 else _img2img_timesteps(scheduler, steps, strength)
    if strength < 1.0:
        scheduler.set_begin_index(steps - len(reference_steps))
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {}, reference_steps)

    sampling = make_preset_sampling(None, PRESETS[name].model_sampling, prediction)
    timesteps = preset_timesteps(PRESETS[name], steps, strength)
    assert timesteps == [int(t) for t in reference_steps.tolist()]
    sigmas = schedule_sigmas(sampling, timesteps)
    x = _pack_start(noise, init, sigmas, strength, max_denoise=False)
    loop = k_sampling.sample_euler if PRESETS[name].sampler == "euler" else k_sampling.sample_euler_ancestral
    extra = {} if PRESETS[name].sampler == "euler" else {"noise_sampler": _popping_noise()}
    ours = loop(_Wrapped(sampling), x, sigmas, disable=True, **extra)
    _assert_close(ours, reference)


def test_lightning_x0_one_step_unet_equals_diffusers_sample_prediction():
    scheduler = EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing", prediction_type="sample")
    scheduler.set_timesteps(1)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, 1.0, {})
    sampling = make_preset_sampling(None, "x0")
    timesteps = preset_timesteps(PRESETS["lightning-x0"], 1)
    assert timesteps == scheduler.timesteps.tolist() == [999]
    sigmas = schedule_sigmas(sampling, timesteps)
    ours = k_sampling.sample_euler(_Wrapped(sampling), _pack_start(noise, init, sigmas, 1.0, False), sigmas,
                                   disable=True)
    _assert_close(ours, reference)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("name, strength", [("dmd2", 1.0), ("dmd2-unet-1step", 1.0), ("hyper-sd-unet-1step", 1.0)])
def test_fixed_timestep_presets_equal_diffusers_lcm_with_custom_timesteps(name, strength, prediction):
    preset = PRESETS[name]
    scheduler = LCMScheduler.from_config(BASE_CONFIG, prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(timesteps=list(preset.timesteps), strength=strength)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {})

    sampling = make_preset_sampling(None, preset.model_sampling, prediction)
    timesteps = preset_timesteps(preset, preset.steps, strength)
    assert timesteps == scheduler.timesteps.tolist()
    sigmas = schedule_sigmas(sampling, timesteps)
    ours = lcm_loop(pack_denoiser(sampling), _pack_start(noise, init, sigmas, strength), sigmas,
                    _popping_noise(), sampling.noise_scaling, disable=True)
    _assert_close(ours, reference)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("name, steps", [("lcm", 4), ("lcm", 8), ("flash", 4), ("flash", 2), ("pcm-lcmlike", 4)])
def test_lcm_grid_presets_equal_diffusers_lcm_scheduler(name, steps, strength, prediction):
    scheduler = LCMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing",
                                         prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps, strength=strength)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {})
    sampling = make_lcm_model_sampling(None, prediction, 50)
    timesteps = preset_timesteps(PRESETS[name], steps, strength)
    assert timesteps == scheduler.timesteps.tolist()
    sigmas = schedule_sigmas(sampling, timesteps)
    ours = lcm_loop(pack_denoiser(sampling), _pack_start(noise, init, sigmas, strength), sigmas, _popping_noise(),
                    sampling.noise_scaling, disable=True)
    _assert_close(ours, reference)


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("name, steps", [("tcd", 4), ("tcd", 8), ("hyper-sd-unified", 1),
                                         ("hyper-sd-unified", 4), ("hyper-sd-unified", 8)])
def test_tcd_presets_equal_diffusers_tcd_scheduler(name, steps, strength, prediction):
    preset = PRESETS[name]
    scheduler = TCDScheduler.from_config(BASE_CONFIG, prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps, strength=strength)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {"eta": preset.gamma})
    sampling = make_lcm_model_sampling(None, prediction, 50, boundary=False)
    timesteps = preset_timesteps(preset, steps, strength)
    assert timesteps == scheduler.timesteps.tolist()
    sigmas = schedule_sigmas(sampling, timesteps)

    def timestep_of(sigma):
        return int(sampling.timestep(sigma.reshape(1)).item())

    ours = tcd_loop(pack_denoiser(sampling), _pack_start(noise, init, sigmas, strength), sigmas, _popping_noise(),
                    sampling.noise_scaling, timestep_of, sampling.train_sigmas, preset.gamma, disable=True)
    _assert_close(ours, reference)


def _linear_betas_run(preset, steps, strength, prediction, beta_schedule):
    """The pack's side of a linear-beta recipe (AnimateLCM: LCM grid; AnimateDiff-Lightning: Euler trailing)."""
    noise, init = _inputs()
    sampling = make_preset_sampling(None, preset.model_sampling, prediction, beta_schedule=beta_schedule)
    timesteps = preset_timesteps(preset, steps, strength)
    sigmas = schedule_sigmas(sampling, timesteps)
    if preset.sampler == "euler":
        x = _pack_start(noise, init, sigmas, strength, max_denoise=False)
        return k_sampling.sample_euler(_Wrapped(sampling), x, sigmas, disable=True), timesteps
    return lcm_loop(pack_denoiser(sampling), _pack_start(noise, init, sigmas, strength), sigmas, _popping_noise(),
                    sampling.noise_scaling, disable=True), timesteps


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("steps", [4, 6, 8])
def test_animatelcm_equals_diffusers_lcm_with_linear_betas(steps, strength, prediction):
    """AnimateLCM: ``LCMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear")`` (diffusers'
    AnimateDiff docs). The same run on the checkpoint's scaled-linear betas is far from it (the betas matter)."""
    preset = PRESETS["animatelcm"]
    assert preset.beta_schedule == "linear" and preset.sampler == "lcm"
    scheduler = LCMScheduler.from_config(BASE_CONFIG, beta_schedule="linear",
                                         prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps, strength=strength)
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {})
    ours, timesteps = _linear_betas_run(preset, steps, strength, prediction, "linear")
    assert timesteps == scheduler.timesteps.tolist()
    _assert_close(ours, reference)
    wrong, _ = _linear_betas_run(preset, steps, strength, prediction, "model")
    assert ((wrong - reference).norm() / reference.norm()).item() > 100 * TOLERANCE


@pytest.mark.parametrize("prediction", ["eps", "v_prediction"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_animatediff_lightning_equals_diffusers_euler_trailing_linear_betas(steps, strength, prediction):
    """AnimateDiff-Lightning: ``EulerDiscreteScheduler.from_config(…, timestep_spacing="trailing",
    beta_schedule="linear")``, guidance 1 (ByteDance/AnimateDiff-Lightning card)."""
    if steps * strength < 1:
        pytest.skip("strength keeps no step")
    preset = PRESETS["animatediff-lightning"]
    scheduler = EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing", beta_schedule="linear",
                                                   prediction_type=DIFFUSERS_PREDICTION[prediction])
    scheduler.set_timesteps(steps)
    reference_steps = scheduler.timesteps if strength == 1.0 else _img2img_timesteps(scheduler, steps, strength)
    if strength < 1.0:
        scheduler.set_begin_index(steps - len(reference_steps))
    noise, init = _inputs()
    reference = _diffusers_run(scheduler, noise, init, strength, {}, reference_steps)
    ours, timesteps = _linear_betas_run(preset, steps, strength, prediction, "linear")
    assert timesteps == [int(t) for t in reference_steps.tolist()]
    _assert_close(ours, reference)


@pytest.mark.parametrize("name", ["dmd2", "dmd2-unet-1step", "hyper-sd-unet-1step", "lightning-x0"])
def test_text_to_image_only_presets_refuse_denoise_below_one(name):
    with pytest.raises(PresetError, match="text-to-image recipe"):
        preset_timesteps(PRESETS[name], PRESETS[name].steps or 1, 0.5)


def test_fixed_timestep_presets_refuse_another_step_count():
    with pytest.raises(PresetError, match=r"published timesteps \[999, 749, 499, 249\] \(4 steps\), not 8"):
        preset_timesteps(PRESETS["dmd2"], 8)


def test_every_preset_has_a_parity_test_above():
    tested = {"hyper-sd", "hyper-sd-cfg", "lightning", "turbo", "lightning-x0", "dmd2", "dmd2-unet-1step",
              "hyper-sd-unet-1step", "lcm", "flash", "tcd", "hyper-sd-unified", "pcm", "pcm-normalcfg", "pcm-lcmlike",
              "animatelcm", "animatediff-lightning"}
    # the flow families' presets run core's sampling: tests/test_accel_family_parity.py (= diffusers) and
    # tests/test_accel_flow_presets.py (= core's KSampler); Wan 2.1's has no diffusers setup (its note says so)
    flow = {"hyper-sd3-4step", "hyper-sd3-8step", "hyper-sd3-16step", "hyper-flux", "flux-turbo-alpha",
            "qwen-image-lightning", "wan21-lightx2v"}
    assert tested | flow == set(PRESETS)
    assert all(PRESETS[name].runs_on == "flow" for name in flow)


@pytest.mark.parametrize("kind, file_name, steps", [("hyper-sd", "Hyper-SDXL-8steps-lora.safetensors", 8),
                                                    ("hyper-sd-cfg", "Hyper-SD15-12steps-CFG-lora.safetensors", 12),
                                                    ("lightning", "sdxl_lightning_2step_lora.safetensors", 2),
                                                    ("lightning", "renamed.safetensors", None),
                                                    ("dmd2", "dmd2_sdxl_4step_lora_fp16.safetensors", 4)])
def test_presets_take_the_step_count_of_the_published_file(kind, file_name, steps):
    assert preset_for_kind(kind, file_name).steps == steps


@pytest.mark.parametrize("file_name, preset, steps, cfg", [
    ("pcm_sd15_smallcfg_2step_converted.safetensors", "pcm", 2, 1.0),
    ("pcm_sdxl_smallcfg_16step_converted.safetensors", "pcm", 16, 1.0),
    ("pcm_sdxl_normalcfg_8step_converted.safetensors", "pcm-normalcfg", 8, 3.0),
    ("pcm_sd15_lcmlike_lora_converted.safetensors", "pcm-lcmlike", None, 1.0)])
def test_pcm_takes_its_variant_and_step_count_from_the_published_name(file_name, preset, steps, cfg):
    chosen = preset_for_kind("pcm", file_name)
    assert (chosen.name, chosen.steps, chosen.cfg) == (preset, steps, cfg)


@pytest.mark.parametrize("file_name, steps", [("animatediff_lightning_1step_comfyui.safetensors", 1),
                                              ("animatediff_lightning_8step_diffusers.safetensors", 8)])
def test_animatediff_lightning_takes_the_step_count_of_its_motion_module(file_name, steps):
    assert preset_for_kind("animatediff-lightning", file_name).steps == steps
