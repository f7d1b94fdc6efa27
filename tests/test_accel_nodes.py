"""Accelerators in real ComfyUI: KSampler (LCM) presets against the authors' diffusers setups on the tiny UNet,
the loader's ``kind`` input and report, ``preset`` auto from what the loader/mixer recorded, mixing rules.

Parity runs the generated SD1.5-family UNet in ComfyUI through ``LCMPack_KSamplerLCM`` with an explicit preset,
and its diffusers twin (same weights) in the card's scheduler (class + config), with ComfyUI's noise draws:
initial noise from ``torch.manual_seed(seed)``, per-step noise from a generator seeded with the seed. Latents
compare after ``process_in`` (×0.18215); 1e-5 relative (fp32). A preset's LoRA only changes weights, so the
parity of its sampling setup is measured on the base model.
"""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
)
from harness.diffusers_unet import diffusers_unet
from lcm_lora_pack.devkit import models
from lcm_lora_pack.devkit.loras import make_kohya_lora

BASE_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}
SEED = 42
TOLERANCE = 1e-5
SCALE = 0.18215
# preset → (diffusers scheduler as the card builds it, step kwargs, steps, cfg, img2img supported)
CARDS = {
    "lcm": (lambda: LCMScheduler.from_config(BASE_CONFIG), {}, 4, 1.0, True),
    "flash": (lambda: LCMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 1.0, True),
    "tcd": (lambda: TCDScheduler.from_config(BASE_CONFIG), {"eta": 0.3}, 4, 1.0, True),
    "hyper-sd-unified": (lambda: TCDScheduler.from_config(BASE_CONFIG), {"eta": 1.0}, 1, 1.0, True),
    "hyper-sd": (lambda: DDIMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 1.0, True),
    "hyper-sd-cfg": (lambda: DDIMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 5.0, True),
    "lightning": (lambda: EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 1.0,
                  True),
    "lightning-x0": (lambda: EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing",
                                                                prediction_type="sample"), {}, 1, 1.0, False),
    "dmd2": (lambda: LCMScheduler.from_config(BASE_CONFIG), {}, 4, 1.0, False),
    "dmd2-unet-1step": (lambda: LCMScheduler.from_config(BASE_CONFIG), {}, 1, 1.0, False),
    "hyper-sd-unet-1step": (lambda: LCMScheduler.from_config(BASE_CONFIG), {}, 1, 1.0, False),
    "turbo": (lambda: EulerAncestralDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 2,
              1.0, True),
    "pcm": (lambda: DDIMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 1.0, True),
    "pcm-normalcfg": (lambda: DDIMScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing"), {}, 4, 3.0, True),
    "pcm-lcmlike": (lambda: LCMScheduler.from_config(BASE_CONFIG), {}, 4, 1.0, True),
    "animatelcm": (lambda: LCMScheduler.from_config(BASE_CONFIG, beta_schedule="linear"), {}, 4, 1.5, True),
    "animatediff-lightning": (lambda: EulerDiscreteScheduler.from_config(BASE_CONFIG, timestep_spacing="trailing",
                                                                         beta_schedule="linear"), {}, 4, 1.0, True),
}
FIXED = {"dmd2": [999, 749, 499, 249], "dmd2-unet-1step": [399], "hyper-sd-unet-1step": [800]}


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]


@pytest.fixture(scope="module")
def twin(sd15):
    return diffusers_unet(models.SD15_UNET_CONFIG, sd15.model.diffusion_model.state_dict())


def _cond(seed):
    return [[0.5 * torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def _run(comfy, model, latent, preset, steps=4, cfg=1.0, denoise=1.0, sampler="lcm", gamma=0.3):
    """``execute`` of the node, returning (samples, the report shown on the node)."""
    output = comfy.node_class("LCMPack_KSamplerLCM").execute(
        model=model, positive=_cond(3), negative=_cond(9), latent_image={"samples": latent}, seed=SEED, steps=steps,
        cfg=cfg, sampler=sampler, gamma=gamma, denoise=denoise, preset=preset)
    return output.result[0]["samples"], "\n".join(output.ui.as_dict()["text"])


@torch.no_grad()
def _diffusers(unet, scheduler, init, strength, steps, cfg, step_kwargs, preset):
    """The pipelines' loop: set_timesteps (+ img2img cut), init_noise_sigma / add_noise, scale_model_input, CFG."""
    if preset in FIXED:
        scheduler.set_timesteps(timesteps=FIXED[preset])
    elif isinstance(scheduler, (LCMScheduler, TCDScheduler)):
        scheduler.set_timesteps(steps, strength=strength)
    else:
        scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if strength < 1.0 and not isinstance(scheduler, (LCMScheduler, TCDScheduler)):
        timesteps = timesteps[steps - min(int(steps * strength), steps):]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(steps - len(timesteps))
    noise = torch.randn(init.shape, generator=torch.Generator().manual_seed(SEED))
    latents = noise * scheduler.init_noise_sigma if strength == 1.0 else scheduler.add_noise(init, noise,
                                                                                              timesteps[:1])
    generator = torch.Generator().manual_seed(SEED)
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        output = unet(model_input, t, encoder_hidden_states=_cond(3)[0][0]).sample
        if cfg != 1.0:
            uncond = unet(model_input, t, encoder_hidden_states=_cond(9)[0][0]).sample
            output = uncond + cfg * (output - uncond)
        latents = scheduler.step(output, t, latents, generator=generator, return_dict=False, **step_kwargs)[0]
    return latents, [int(t) for t in timesteps]


@pytest.mark.parametrize("preset", list(CARDS))
@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_every_preset_equals_its_cards_diffusers_setup(comfy, sd15, twin, preset, denoise):
    make_scheduler, step_kwargs, steps, cfg, img2img = CARDS[preset]
    if denoise < 1.0 and not img2img:
        pytest.skip("text-to-image recipe (its card gives no image-to-image use)")
    init = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)) * 4.0 * (denoise < 1.0)
    ours, report = _run(comfy, sd15, init, preset, steps=steps, denoise=denoise)
    reference, timesteps = _diffusers(twin, make_scheduler(), init * SCALE, denoise, steps, cfg, step_kwargs, preset)
    assert f"timesteps {timesteps}" in report, report
    assert f"cfg {cfg:g}" in report and f"preset {preset}" in report
    if preset == "lightning-x0":
        # One Euler step from σ_max to 0 returns x + (x̂₀ − x): in fp32 it cancels a start latent ~2000× larger than
        # the tiny UNet's x̂₀, so both sides carry rounding of a few ulp of x (diffusers' own result included).
        start = torch.randn(init.shape, generator=torch.Generator().manual_seed(SEED)) * 14.6146
        bound = 8 * torch.finfo(torch.float32).eps * start.abs().max().item()
        assert (ours * SCALE - reference).abs().max().item() <= bound, report
        return
    relative = ((ours * SCALE - reference).norm() / reference.norm()).item()
    assert relative < TOLERANCE, (relative, report)


def test_preset_is_the_last_optional_input_and_old_inputs_are_unchanged(comfy):
    schema = comfy.node_class("LCMPack_KSamplerLCM").define_schema()
    ids = [i.id for i in schema.inputs]
    assert ids == ["model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler", "gamma",
                   "denoise", "preset"]
    preset = schema.inputs[-1]
    assert preset.optional and preset.default == "auto" and preset.tooltip
    loader = comfy.node_class("LCMPack_LCMLoraLoader").define_schema().inputs
    assert loader[-1].id == "kind" and loader[-1].optional and loader[-1].default == "auto"


def test_auto_without_a_recorded_accelerator_is_the_old_behaviour(comfy, sd15):
    empty = torch.zeros(1, 4, 8, 8)
    auto, report = _run(comfy, sd15, empty, "auto")
    custom, _ = _run(comfy, sd15, empty, "custom")
    assert torch.equal(auto, custom)
    assert "no accelerator recorded" in report and "timesteps [999, 759, 499, 259]" in report


@pytest.fixture(scope="module")
def accelerator_files(comfy):
    folder = comfy.base / "models" / "loras"
    cfg = models.SD15_UNET_CONFIG
    names = ["sdxl_lightning_8step_lora.safetensors", "Hyper-SD15-2steps-lora.safetensors",
             "dmd2_sdxl_4step_lora_fp16.safetensors", "TCD-SD15-LoRA.safetensors", "renamed-accel.safetensors",
             "pcm_sd15_smallcfg_4step_converted.safetensors", "watercolor-style.safetensors",
             "AnimateLCM_sd15_t2v_lora.safetensors"]
    for seed, name in enumerate(names):
        make_kohya_lora(cfg, folder / name, rank=4, seed=40 + seed, targets="attention")
    make_kohya_lora(cfg, folder / "pytorch_lora_weights.safetensors", rank=64, alpha=8.0, seed=60, targets="lcm-full")
    return names


def _load(comfy, model, name, kind="auto"):
    output = comfy.node_class("LCMPack_LCMLoraLoader").execute(model=model, lora_name=name, strength=1.0,
                                                              allow_partial=False, kind=kind)
    return output.result[0], output.result[2], "\n".join(output.ui.as_dict()["text"])


def test_published_lcm_lora_as_pytorch_lora_weights_gets_lcm_sampling(comfy, sd15, accelerator_files):
    model, report, shown = _load(comfy, sd15, "pytorch_lora_weights.safetensors")
    assert shown == report and "kind: lcm (decided by content" in report
    assert type(model.get_model_object("model_sampling")).__name__ == "LCMModelSampling"
    _, sampled = _run(comfy, model, torch.zeros(1, 4, 8, 8), "auto")
    assert "preset lcm" in sampled


@pytest.mark.parametrize("name, preset, timesteps", [
    ("sdxl_lightning_8step_lora.safetensors", "lightning", [999, 874, 749, 624, 499, 374, 249, 124]),
    ("Hyper-SD15-2steps-lora.safetensors", "hyper-sd", [999, 499]),
    ("dmd2_sdxl_4step_lora_fp16.safetensors", "dmd2", [999, 749, 499, 249]),
    ("TCD-SD15-LoRA.safetensors", "tcd", [999, 759, 499, 259])])
def test_auto_samples_what_the_loader_recorded(comfy, sd15, accelerator_files, name, preset, timesteps):
    model, report, _ = _load(comfy, sd15, name)
    assert "decided by the file name" in report
    _, sampled = _run(comfy, model, torch.zeros(1, 4, 8, 8), "auto")
    assert f"preset {preset} (auto: {name}" in sampled and f"timesteps {timesteps}" in sampled, sampled


def test_kind_input_overrides_detection_and_explicit_inputs_still_win(comfy, sd15, accelerator_files):
    model, report, _ = _load(comfy, sd15, "renamed-accel.safetensors", kind="lightning")
    assert "kind: lightning (set by the loader's kind input; detected: style)" in report
    _, sampled = _run(comfy, model, torch.zeros(1, 4, 8, 8), "auto", cfg=1.5)
    assert "preset lightning" in sampled and "cfg 1.5 from the node's input" in sampled and "cfg 1.5," in sampled


def test_pcm_auto_samples_ddim_trailing_at_the_files_step_count(comfy, sd15, accelerator_files):
    model, report, _ = _load(comfy, sd15, "pcm_sd15_smallcfg_4step_converted.safetensors")
    assert "kind: pcm" in report and "DDIM trailing" in report
    _, sampled = _run(comfy, model, torch.zeros(1, 4, 8, 8), "auto")
    assert "preset pcm (auto: pcm_sd15_smallcfg_4step_converted" in sampled, sampled
    assert "sampler ddim" in sampled and "timesteps [999, 749, 499, 249]" in sampled, sampled


def test_animatelcm_auto_samples_lcm_on_linear_betas_and_names_the_authors_strength(comfy, sd15, accelerator_files):
    model, report, _ = _load(comfy, sd15, "AnimateLCM_sd15_t2v_lora.safetensors")
    assert "kind: animatelcm (decided by the file name" in report, report
    assert "Strength: the AnimateLCM recipe applies it at 0.8" in report and "is applied at 1." in report, report
    _, sampled = _run(comfy, model, torch.zeros(1, 4, 8, 8), "auto")
    assert "preset animatelcm (auto: AnimateLCM_sd15_t2v_lora" in sampled, sampled
    assert "linear betas" in sampled and "cfg 1.5," in sampled and "timesteps [999, 759, 499, 259]" in sampled


def test_a_cfg_outside_the_authors_range_is_named_on_the_node(comfy, sd15):
    _, sampled = _run(comfy, sd15, torch.zeros(1, 4, 8, 8), "hyper-sd-cfg", steps=8, cfg=1.8)
    assert "warning: cfg 1.8 is outside the 5-8 its authors give for hyper-sd-cfg" in sampled, sampled


def _stack(comfy, *items):
    current = None
    for name, weight, role in items:
        (current,) = comfy.run_node("LCMPack_LoraStack", lora_name=name, weight=weight, role=role, stack=current)
    return current


def test_two_accelerators_in_one_stack_are_refused_naming_both(comfy, sd15, accelerator_files):
    stack = _stack(comfy, ("TCD-SD15-LoRA.safetensors", 1.0, "accelerator"),
                   ("dmd2_sdxl_4step_lora_fp16.safetensors", 1.0, "style"))
    with pytest.raises(Exception, match="two accelerators in one stack") as failure:
        comfy.run_node("LCMPack_LoraMixer", model=sd15, stack=stack, style_normalization="none", allow_partial=False)
    assert "TCD-SD15-LoRA.safetensors" in str(failure.value) and "dmd2_sdxl_4step_lora_fp16" in str(failure.value)


@pytest.mark.parametrize("accelerator, kind", [("pytorch_lora_weights.safetensors", "LCM"),
                                               ("TCD-SD15-LoRA.safetensors", "TCD"),
                                               ("Hyper-SD15-2steps-lora.safetensors", "Hyper-SD"),
                                               ("sdxl_lightning_8step_lora.safetensors", "Lightning"),
                                               ("dmd2_sdxl_4step_lora_fp16.safetensors", "DMD2")])
def test_accelerator_plus_style_mixes_with_the_accelerators_style_advice(comfy, sd15, accelerator_files,
                                                                         accelerator, kind):
    stack = _stack(comfy, (accelerator, 1.0, "accelerator"), ("watercolor-style.safetensors", 0.8, "style"))
    output = comfy.node_class("LCMPack_LoraMixer").execute(model=sd15, stack=stack, style_normalization="none",
                                                           allow_partial=False)
    report = output.result[2]
    assert "\n".join(output.ui.as_dict()["text"]) == report
    assert f"Style weights with {kind}:" in report, report
    _, sampled = _run(comfy, output.result[0], torch.zeros(1, 4, 8, 8), "auto")
    assert "preset " in sampled and accelerator in sampled
