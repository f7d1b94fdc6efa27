"""ComfyUI side of the accelerator presets: model sampling, sigmas and SAMPLER objects for a preset.

Plugs in only through public hooks: the model sampling is an object patch on a clone
(``ModelPatcher.add_object_patch``), samplers are ``comfy.samplers.KSAMPLER`` objects running either the pack's
loops (LCM, TCD, DDIM) or core's ``sample_euler`` / ``sample_euler_ancestral`` (with s_churn 0 / η 1 they are
diffusers' ``EulerDiscreteScheduler`` / ``EulerAncestralDiscreteScheduler`` steps).

Start noise. ComfyUI scales the start noise by √(1+σ₀²) at σ₀ = σ_max ("max denoise"), i.e. the VP sample is
pure noise (diffusers' DDIM/LCM/TCD: ``init_noise_sigma = 1``). diffusers' Euler schedulers with trailing
spacing use ``init_noise_sigma = σ_max`` instead, so their KSAMPLER here answers ``max_denoise`` with False
(noise·σ₀ + latent, which is also diffusers' ``add_noise`` for image-to-image).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import comfy.model_sampling
import comfy.samplers
import torch

from .. import accelerators
from ..lora import applied, kinds
from ..samplers.ddim_sampler import ddim_loop
from ..samplers.lcm_sampler import seeded_noise_sampler
from ..samplers.presets import (
    Choice,
    Preset,
    PresetError,
    ddim_landing_timesteps,
    preset_for_kind,
    preset_timesteps,
    presets,
)
from . import contract
from .comfy_clone_cache import reused_clone
from .comfy_flow_presets import plan_flow_sampling
from .comfy_k_diffusion import _parts, sample_lcm_exact, sample_tcd
from .comfy_model_sampling import (
    PREDICTION_TYPES,
    LCMBoundary,
    check_lcm_capable,
    chosen_sampling,
    full_noise_table,
    lcm_patched_clone,
    lcm_sampling_info,
    lcm_schedule,
    make_lcm_model_sampling,
    mark_auto,
    reused_lcm_sampling,
    sampling_prediction_type,
    schedule_sigmas,
    training_sigmas,
    use_noise_table,
)

# diffusers' beta schedule names → ComfyUI's ``make_beta_schedule`` names (diffusers' "linear" is linspace(β₀, β₁),
# ComfyUI's "sqrt_linear"; ComfyUI's "linear" is diffusers' "scaled_linear").
BETA_SCHEDULES = {"linear": "sqrt_linear", "scaled_linear": "linear"}


class _SamplingSettings:
    """A model config seen by ``ModelSamplingDiscrete`` (which reads only ``sampling_settings``) with another beta
    schedule: the recipe's (AnimateLCM, AnimateDiff-Lightning: diffusers' ``beta_schedule="linear"``)."""

    def __init__(self, model_config, beta_schedule: str):
        settings = dict(getattr(model_config, "sampling_settings", None) or {})
        settings["beta_schedule"] = BETA_SCHEDULES[beta_schedule]
        self.sampling_settings = settings


def with_beta_schedule(model_config, beta_schedule: str = "model"):
    """``model_config`` as the model sampling of a recipe reads it ("model": unchanged)."""
    return model_config if beta_schedule == "model" else _SamplingSettings(model_config, beta_schedule)


def make_preset_sampling(model_config, kind: str, prediction_type: str = "eps", zsnr: bool = False, device=None,
                         beta_schedule: str = "model", train_sigmas: torch.Tensor | None = None):
    """Full 1000-step discrete sampling for ``kind`` "discrete" (the model's own prediction), "x0" (prediction
    type sample: SDXL-Lightning's 1-step UNet) or "lcm-full" (the LCM boundary condition on the full schedule:
    diffusers' ``LCMScheduler`` with custom timesteps, DMD2); "lcm" / "tcd": the LCM grid with / without the
    boundary. ``beta_schedule``: the recipe's (:func:`with_beta_schedule`); with "model", ``train_sigmas`` (the
    noise table of the model's current sampling) when given, else the checkpoint's."""
    model_config = with_beta_schedule(model_config, beta_schedule)
    table = train_sigmas if beta_schedule == "model" else None
    if kind in ("lcm", "tcd"):
        return make_lcm_model_sampling(model_config, prediction_type, zsnr=zsnr, boundary=(kind == "lcm"),
                                       device=device, train_sigmas=table)
    if kind == "x0":
        bases = (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.X0)
    elif kind == "lcm-full":
        bases = (LCMBoundary, comfy.model_sampling.ModelSamplingDiscrete, PREDICTION_TYPES[prediction_type])
    elif kind == "discrete":
        bases = (comfy.model_sampling.ModelSamplingDiscrete, PREDICTION_TYPES[prediction_type])
    else:
        raise ValueError(f"model sampling {kind!r} is not one of lcm, tcd, discrete, x0, lcm-full.")
    sampling = type(f"PresetSampling_{kind.replace('-', '_')}", bases, {})(model_config, zsnr=zsnr)
    if table is not None:
        use_noise_table(sampling, table)
    return sampling if device is None else sampling.to(device)


def prepare_model(model_patcher, preset: Preset, sampler: str | None = None):
    """The model with the preset's model sampling (a reused clone; the input is never mutated). ``sampler``: the
    sampler chosen (an LCM-grid recipe run with tcd gets the grid without the boundary)."""
    kind = preset.model_sampling
    if kind in ("lcm", "tcd") and sampler in ("lcm", "tcd"):
        kind = sampler
    if kind in ("lcm", "tcd") and preset.beta_schedule == "model":
        return reused_lcm_sampling(model_patcher, boundary=(kind == "lcm"))
    current = model_patcher.get_model_object("model_sampling")
    check_lcm_capable(current)
    if kind == "discrete" and preset.beta_schedule == "model" and lcm_sampling_info(current).source == "none":
        return model_patcher

    def make(model):
        sampling = make_preset_sampling(model.model.model_config, kind, sampling_prediction_type(current),
                                        bool(getattr(current, "zsnr", False)), device=model.load_device,
                                        beta_schedule=preset.beta_schedule, train_sigmas=full_noise_table(current))
        return lcm_patched_clone(model, mark_auto(sampling))

    return reused_clone(model_patcher, ("preset_sampling", kind, preset.beta_schedule), make)


def preset_schedule(model_sampling, preset: Preset, steps: int, denoise: float) -> tuple[torch.Tensor, list[int]]:
    """(SIGMAS ending in 0, the timesteps) of ``preset`` on this (prepared) model sampling."""
    if preset.schedule == "lcm-grid":
        sigmas = lcm_schedule(model_sampling, steps, denoise)
        return sigmas, model_sampling.timestep(sigmas[:-1]).long().tolist()
    timesteps = preset_timesteps(preset, steps, denoise)
    return schedule_sigmas(model_sampling, timesteps), timesteps


class _TrailingEulerKSampler(comfy.samplers.KSAMPLER):
    """KSAMPLER whose start noise is noise·σ₀ + latent (diffusers' trailing Euler ``init_noise_sigma = σ_max``)."""

    def max_denoise(self, model_wrap, sigmas):
        return False


class _PureNoiseKSampler(comfy.samplers.KSAMPLER):
    """KSAMPLER starting text-to-image from unit-variance VP noise at any first timestep: diffusers' ``LCMScheduler``
    (``init_noise_sigma = 1``) with a single custom timestep below 999 (DMD2's [399], Hyper-SD's [800])."""

    def max_denoise(self, model_wrap, sigmas):
        return True


@torch.no_grad()
def sample_ddim_trailing(model, x, sigmas, extra_args=None, callback=None, disable=None, land_sigmas=None):
    """DDIM (η = 0) with diffusers' landing timesteps (``ddim_sampler.ddim_loop``)."""
    _, _, _, denoise, explain = _parts(model, x, extra_args, lambda *_: None)
    return ddim_loop(denoise, x, sigmas, land_sigmas, callback, disable, explain)


@torch.no_grad()
def sample_euler_ancestral_seeded(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Core's ``sample_euler_ancestral`` (η 1) with the pack's noise rule: a generator seeded with the sampler's
    seed, as the pack's LCM/TCD loops draw it. Core's own default noise differs between hosts (0.8.0 adds 1 to the
    seed on the CPU), so a preset samples the same on every ComfyUI version."""
    seed = (extra_args or {}).get("seed")
    euler_ancestral = contract.require_core_k_sampler("sample_euler_ancestral")
    return euler_ancestral(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                           noise_sampler=seeded_noise_sampler(x, seed))


def ddim_land_sigmas(model_sampling, timesteps: list[int], steps: int, model_config=None) -> torch.Tensor:
    """σ at each DDIM step's landing timestep (``presets.ddim_landing_timesteps``), from the full schedule."""
    table = training_sigmas(model_sampling, model_config)
    return table[torch.tensor(ddim_landing_timesteps(timesteps, steps))].float().cpu()


def make_preset_sampler(sampler: str, gamma: float = 0.3, land_sigmas: torch.Tensor | None = None,
                        pure_noise_start: bool = False):
    """The SAMPLER object for ``sampler`` ("lcm", "tcd", "ddim", "euler", "euler_ancestral").

    ``pure_noise_start``: text-to-image from VP noise even when the first timestep is below σ_max (LCM only).
    """
    if sampler in ("euler", "euler_ancestral") or sampler == "lcm" and pure_noise_start:
        contract.check_max_denoise_override()  # the subclasses below answer max_denoise themselves
    if sampler == "lcm":
        return (_PureNoiseKSampler if pure_noise_start else comfy.samplers.KSAMPLER)(sample_lcm_exact)
    if sampler == "tcd":
        return comfy.samplers.KSAMPLER(sample_tcd, extra_options={"gamma": float(gamma)})
    if sampler == "ddim":
        return comfy.samplers.KSAMPLER(sample_ddim_trailing, extra_options={"land_sigmas": land_sigmas})
    if sampler == "euler":
        return _TrailingEulerKSampler(contract.require_core_k_sampler("sample_euler"))
    if sampler == "euler_ancestral":
        return _TrailingEulerKSampler(sample_euler_ancestral_seeded)
    raise ValueError(f"sampler={sampler!r} is not one of lcm, tcd, ddim, euler, euler_ancestral.")


def resolve_preset(model_patcher, name: str) -> tuple[Preset | None, str]:
    """``(preset, why)`` for the KSampler's ``preset`` input: "custom" (none), "auto" (what the pack's loader or
    mixer recorded on the model: ``lora.applied``) or an explicit preset name."""
    record = applied.find_acceleration(getattr(model_patcher, "model_options", {}) or {})
    if name == "custom":
        return None, "preset custom"
    if name == "auto":
        if record is None:
            return None, "preset auto: no accelerator recorded on the model by the pack's loader or mixer"
        preset = preset_for_kind(record["kind"], record["name"])
        if preset is None:
            return None, (f"preset auto: {record['name']} is {kinds.kind_name(record['kind'])}, which has no preset "
                          "(docs/accelerators.md)")
        return preset, f"auto: {record['name']} ({kinds.kind_name(record['kind'])}) recorded by the loader/mixer"
    known = presets()
    if name not in known:
        raise PresetError(f"preset {name!r} is unknown; use auto, custom or one of {list(known)}.")
    if record is not None and accelerators.recipe_kind(name) == record["kind"]:
        chosen = preset_for_kind(record["kind"], record["name"])
        if chosen is not None and chosen.name == name:
            return chosen, f"chosen on the node, for {record['name']}"
    return known[name], "chosen on the node"


@dataclass(frozen=True)
class SamplingPlan:
    """What KSampler (LCM) runs: the prepared model, its sigmas, the SAMPLER, and a report of all of it."""

    model: object
    sigmas: torch.Tensor
    sampler: object
    report: str


def plan_sampling(model_patcher, choice: Choice, denoise: float) -> SamplingPlan:
    """Model sampling, sigmas and sampler for ``choice`` (no preset: the node's LCM/TCD path as it always was).

    A model sampling a node set after the pack's loader (:func:`chosen_sampling`: AnimateDiff-Evolved's beta
    schedule, core's ``ModelSamplingDiscrete``, ``LCM Model Sampling``) wins over the preset's beta schedule: the
    user picked it. The sampler still gets the model sampling it needs (grid and boundary), built on its betas.
    """
    preset = choice.preset
    if preset is not None and preset.runs_on == "flow":  # FLUX.1, SD3, Qwen-Image, Wan: core's own sampling
        return SamplingPlan(*plan_flow_sampling(model_patcher, choice, denoise))
    notes: list[str] = []
    chosen = chosen_sampling(model_patcher, notes)
    if preset is not None and chosen is not None and preset.beta_schedule != "model":
        notes.append(f"model sampling {type(chosen).__name__} was set after the loader: its beta schedule is "
                     f"sampled, not the preset's {preset.beta_schedule} betas (docs/composition.md)")
        preset = replace(preset, beta_schedule="model")
    if preset is None or (choice.sampler in ("lcm", "tcd") and preset.model_sampling in ("lcm", "tcd")
                          and preset.beta_schedule == "model"):
        boundary = choice.sampler == "lcm"
        model = reused_lcm_sampling(model_patcher, boundary=boundary)
        sampling = model.get_model_object("model_sampling")
        sigmas = lcm_schedule(sampling, choice.steps, denoise)
        sampling_name = "LCM grid + boundary" if boundary else "LCM grid (TCD: no boundary)"
    else:
        model = prepare_model(model_patcher, preset, choice.sampler)
        sampling = model.get_model_object("model_sampling")
        sigmas, _ = preset_schedule(sampling, preset, choice.steps, denoise)
        sampling_name = {"discrete": "the model's 1000-step discrete sampling", "x0": "discrete, x0 prediction",
                         "lcm-full": "LCM boundary on the 1000-step schedule", "lcm": "LCM grid + boundary",
                         "tcd": "LCM grid (TCD: no boundary)"}[preset.model_sampling]
        if preset.beta_schedule != "model":
            sampling_name += f", {preset.beta_schedule} betas (the recipe's, not the checkpoint's)"
    timesteps = sampling.timestep(sigmas[:-1].to(sampling.sigmas.device)).long().tolist()
    land = None
    if choice.sampler == "ddim":
        land = ddim_land_sigmas(sampling, timesteps, choice.steps, getattr(model.model, "model_config", None))
    pure_noise = preset is not None and preset.schedule == "fixed" and float(denoise) == 1.0
    sampler = make_preset_sampler(choice.sampler, choice.gamma, land, pure_noise_start=pure_noise)
    gamma = f", gamma {choice.gamma:g}" if choice.sampler == "tcd" else ""
    if chosen is not None and sampling is not chosen and full_noise_table(chosen) is None:
        notes.append(f"model sampling {type(chosen).__name__} (set after the loader) holds only its distillation "
                     f"grid, so {sampling_name} was built on the checkpoint's betas")
    lines = ["KSampler (LCM): " + "; ".join(choice.reasons),
             f"sampler {choice.sampler}{gamma}, timesteps {timesteps}, model sampling: {sampling_name}, "
             f"cfg {choice.cfg:g}, steps {choice.steps}, denoise {float(denoise):g}", *notes]
    return SamplingPlan(model, sigmas, sampler, "\n".join(lines))
