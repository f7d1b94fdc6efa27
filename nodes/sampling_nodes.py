"""Sampling nodes: LCM model sampling patch, LCM/TCD sampler, LCM scheduler and a one-node LCM KSampler.

Thin V3 nodes; the math lives in ``samplers/`` (timestep rule, loops, ComfyUI model-sampling bridge).
"""
from __future__ import annotations

import logging

import comfy.sample
import comfy.samplers
from comfy_api.latest import io, ui

from ..accelerators.render import preset_tooltip
from ..errors import SamplingError
from ..host import contract
from ..host.comfy_k_diffusion import sample_lcm_exact, sample_tcd
from ..host.comfy_model_sampling import (
    check_lcm_capable,
    full_noise_table,
    lcm_patched_clone,
    lcm_schedule,
    make_lcm_model_sampling,
    sampling_prediction_type,
)
from ..host.comfy_presets import plan_sampling, resolve_preset
from ..samplers.boundary import DEFAULT_SIGMA_DATA, DEFAULT_TIMESTEP_SCALING
from ..samplers.guidance import negative_needed, positive_copies_to_negative, uncond_readers
from ..samplers.presets import PRESET_NAMES, choose
from ..samplers.timesteps import (
    DEFAULT_ORIGINAL_INFERENCE_STEPS,
    LCMScheduleError,
    check_custom_timesteps,
    lcm_timesteps,
    parse_timesteps,
)
from .common import CATEGORY_SAMPLING, NODE_PREFIX, check_inputs, first_failure

LOG = logging.getLogger(__name__)

SAMPLER_NAMES = ["lcm", "tcd"]
GAMMA_TOOLTIP = ("TCD's gamma (stochasticity, diffusers' eta), 0..1: 0 = deterministic DDIM-like steps, 0.3 = "
                 "TCD-LoRA default, 1.0 = Hyper-SD one-step. Ignored by the lcm sampler.")
NEGATIVE_TOOLTIP = ("Negative conditioning. Not evaluated at cfg 1.0 (its nodes, e.g. the negative text encode, do "
                    "not run): ComfyUI ignores it there. Evaluated at any other cfg, or when a model patch reads it "
                    "(SAG, PerpNeg, APG, CFGNorm, ...).")
PRESET_OPTIONS = ["auto", "custom", *sorted(PRESET_NAMES)]  # alphabetical: registry order is detection order
PRESET_TOOLTIP = preset_tooltip()  # generated from the registry (accelerators/render.py)
KSAMPLER_DEFAULTS = {"sampler": "lcm", "gamma": 0.3, "cfg": 1.0, "steps": 4}
SAMPLER_TOOLTIP = ("lcm: LCM multistep sampling (LCM-LoRA, LCM models, DMD2). tcd: Trajectory Consistency "
                   "Distillation sampling with gamma (TCD-LoRA, Hyper-SD).")


def check_gamma_input(gamma) -> bool | str:
    """Validation-time message for gamma outside [0, 1]."""
    if gamma is not None and not 0.0 <= float(gamma) <= 1.0:
        return f"gamma={gamma} is outside [0, 1]; use 0.3 for TCD-LoRA or 1.0 for Hyper-SD one-step."
    return True


def check_schedule_inputs(steps, denoise, original_inference_steps=0) -> bool | str:
    """Validation-time checks of steps / denoise against the LCM grid (model-independent where the grid is)."""
    if steps is not None and int(steps) < 1:
        return f"steps={steps} must be at least 1 (LCM-LoRA: 4 to 8)."
    if denoise is not None and not 0.0 < float(denoise) <= 1.0:
        return f"denoise={denoise} must be in (0, 1]; 1.0 for text-to-image, about 0.5 for image-to-image."
    if original_inference_steps is not None and not 0 <= int(original_inference_steps) <= 1000:
        return (f"original_inference_steps={original_inference_steps} is outside 0..1000; use 0 to follow the "
                "model, 50 for published LCM-LoRAs.")
    if None not in (steps, denoise) and original_inference_steps:
        try:
            lcm_timesteps(int(steps), int(original_inference_steps), float(denoise))
        except LCMScheduleError as error:
            return str(error)
    return True


def _schema(name: str, display_name: str, **fields) -> io.Schema:
    """A schema in the pack's sampling category with the ``LCMPack_`` id prefix."""
    return io.Schema(node_id=f"{NODE_PREFIX}{name}", display_name=display_name, category=CATEGORY_SAMPLING, **fields)


class ModelSamplingLCM(io.ComfyNode):
    """Clone a model and patch its sampling to the LCM grid and boundary condition."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "ModelSamplingLCM", "LCM Model Sampling",
            description="Sets a model to LCM sampling: the distillation timestep grid and the consistency "
                        "boundary condition, with the constants configurable (core hard-codes 50 / 10 / 0.5), on "
                        "the betas of the model's current sampling. Works for eps and v-prediction models. KSampler "
                        "(LCM) keeps what this node sets (a preset's beta schedule does not replace it).",
            inputs=[
                io.Model.Input("model", tooltip="The model (with an LCM-LoRA applied) to sample with LCM."),
                io.Int.Input("original_inference_steps", default=DEFAULT_ORIGINAL_INFERENCE_STEPS, min=1, max=1000,
                             tooltip="Steps of the teacher's skipping schedule used in distillation (50 for all "
                                     "published LCM-LoRAs). Sets the timestep grid: k = 1000 // this value."),
                io.Float.Input("timestep_scaling", default=DEFAULT_TIMESTEP_SCALING, min=0.0, max=1000.0, step=0.1,
                               tooltip="Scale of the timestep in the boundary condition c_skip/c_out (10 for "
                                       "published LCM-LoRAs)."),
                io.Float.Input("sigma_data", default=DEFAULT_SIGMA_DATA, min=0.001, max=10.0, step=0.01,
                               tooltip="sigma_data of the boundary condition (0.5 for published LCM-LoRAs)."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model; the input model is not changed.")],
        )

    @classmethod
    def validate_inputs(cls, original_inference_steps: int | None = None, timestep_scaling: float | None = None,
                        sigma_data: float | None = None) -> bool | str:
        return check_inputs(cls, original_inference_steps=original_inference_steps,
                            timestep_scaling=timestep_scaling, sigma_data=sigma_data)

    @classmethod
    def execute(cls, model, original_inference_steps: int, timestep_scaling: float,
                sigma_data: float) -> io.NodeOutput:
        current = model.get_model_object("model_sampling")
        check_lcm_capable(current)
        sampling = make_lcm_model_sampling(model.model.model_config, sampling_prediction_type(current),
                                           original_inference_steps, timestep_scaling, sigma_data,
                                           zsnr=bool(getattr(current, "zsnr", False)), device=model.load_device,
                                           train_sigmas=full_noise_table(current))
        return io.NodeOutput(lcm_patched_clone(model, sampling))


def make_sampler(sampler: str, gamma: float) -> comfy.samplers.KSAMPLER:
    """A ComfyUI ``SAMPLER`` object running the pack's LCM or TCD loop."""
    if sampler == "lcm":
        return comfy.samplers.KSAMPLER(sample_lcm_exact)
    if sampler == "tcd":
        return comfy.samplers.KSAMPLER(sample_tcd, extra_options={"gamma": float(gamma)})
    raise ValueError(f"sampler={sampler!r} is not one of {SAMPLER_NAMES}.")


class LCMSampler(io.ComfyNode):
    """SAMPLER for SamplerCustom / SamplerCustomAdvanced: LCM multistep or TCD."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "LCMSampler", "LCM / TCD Sampler",
            description="LCM multistep or TCD sampler equal to diffusers' LCMScheduler / TCDScheduler, for "
                        "SamplerCustom and SamplerCustomAdvanced. Pair it with the LCM Scheduler node; for lcm use "
                        "a model with LCM model sampling (LCM Model Sampling node).",
            inputs=[
                io.Combo.Input("sampler", options=SAMPLER_NAMES, default="lcm", tooltip=SAMPLER_TOOLTIP),
                io.Float.Input("gamma", default=0.3, min=0.0, max=1.0, step=0.01, tooltip=GAMMA_TOOLTIP),
            ],
            outputs=[io.Sampler.Output(tooltip="The sampler, for SamplerCustom's 'sampler' input.")],
        )

    @classmethod
    def validate_inputs(cls, sampler: str | None = None, gamma: float | None = None) -> bool | str:
        return first_failure(check_gamma_input(gamma), check_inputs(cls, sampler=sampler, gamma=gamma))

    @classmethod
    def execute(cls, sampler: str, gamma: float) -> io.NodeOutput:
        return io.NodeOutput(make_sampler(sampler, gamma))


class LCMScheduler(io.ComfyNode):
    """SIGMAS exactly on the LCM distillation grid of a model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "LCMScheduler", "LCM Scheduler",
            description="Sigmas on the LCM distillation grid (diffusers >= 0.24 rule: 4 steps = timesteps 999, 759, "
                        "499, 259), following the model's LCM model sampling constants. Core's sgm_uniform picks "
                        "519 instead of 499 and lands 0.4-0.9 % off the reference.",
            inputs=[
                io.Model.Input("model", tooltip="The model to schedule for (its LCM grid is used when it has one)."),
                io.Int.Input("steps", default=4, min=1, max=1000,
                             tooltip="Number of sampling steps (LCM-LoRA: 4 to 8). At most "
                                     "original_inference_steps x denoise."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Strength: 1.0 for text-to-image; below 1 the grid is cut from the top for "
                                       "image-to-image (diffusers' strength rule)."),
                io.Int.Input("original_inference_steps", default=0, min=0, max=1000,
                             tooltip="Distillation grid size. 0 = follow the model's LCM model sampling (50 if it "
                                     "has none); a different value than the model's is an error."),
                io.String.Input("custom_timesteps", default="", optional=True,
                                tooltip="Optional descending timesteps such as '999, 749, 499, 249' (DMD2); "
                                        "overrides steps. Off-grid entries need a model without the LCM grid."),
            ],
            outputs=[io.Sigmas.Output(tooltip="Sigmas for SamplerCustom, ending in 0.")],
        )

    @classmethod
    def validate_inputs(cls, steps: int | None = None, denoise: float | None = None,
                        original_inference_steps: int | None = None,
                        custom_timesteps: str | None = None) -> bool | str:
        # Named inputs lose core's min/max checks: check_inputs re-checks them (finite, in range).
        ranges = check_inputs(cls, steps=steps, denoise=denoise, original_inference_steps=original_inference_steps)
        if custom_timesteps and custom_timesteps.strip():
            failure = first_failure(check_schedule_inputs(None, denoise, original_inference_steps), ranges)
            if failure is not True or denoise is None:
                return failure
            try:
                grid = original_inference_steps or DEFAULT_ORIGINAL_INFERENCE_STEPS
                check_custom_timesteps(parse_timesteps(custom_timesteps), grid, denoise)
            except LCMScheduleError as error:
                return str(error)
            return True
        return first_failure(check_schedule_inputs(steps, denoise, original_inference_steps), ranges)

    @classmethod
    def execute(cls, model, steps: int, denoise: float, original_inference_steps: int,
                custom_timesteps: str = "") -> io.NodeOutput:
        custom = parse_timesteps(custom_timesteps or "")
        sigmas = lcm_schedule(model.get_model_object("model_sampling"), steps, denoise, original_inference_steps,
                              custom or None)
        return io.NodeOutput(sigmas)


class KSamplerLCM(io.ComfyNode):
    """One node: LCM (or TCD) sampling of a latent with exact grid, model sampling and noise."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(
            "KSamplerLCM", "KSampler (LCM)",
            description="LCM sampling in one node: applies LCM model sampling when the model has none, picks the "
                        "exact LCM grid and runs the LCM (or TCD) sampler. Connect an LCM-LoRA'd model. cfg 1.0 is "
                        "one UNet call per step and does not evaluate the negative input (its text encode is "
                        "skipped); above ~2 images burn.",
            inputs=[
                io.Model.Input("model", tooltip="Model with an LCM-LoRA (or TCD-LoRA) applied; LCM model sampling is "
                                                "added if missing, an existing one (its constants) is kept."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", lazy=True, tooltip=NEGATIVE_TOOLTIP),
                io.Latent.Input("latent_image", tooltip="Latent to sample: empty for text-to-image, an encoded "
                                                        "image with denoise < 1 for image-to-image."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise and of the fresh noise of every step."),
                io.Int.Input("steps", default=4, min=1, max=1000,
                             tooltip="Sampling steps (LCM-LoRA: 4 to 8); at most 50 x denoise on the default grid."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. 1.0: one UNet call per step, negative not evaluated. "
                                       "1-2 adds guidance at twice the cost; above ~2 LCM images burn."),
                io.Combo.Input("sampler", options=SAMPLER_NAMES, default="lcm", tooltip=SAMPLER_TOOLTIP),
                io.Float.Input("gamma", default=0.3, min=0.0, max=1.0, step=0.01, tooltip=GAMMA_TOOLTIP),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1.0 for text-to-image; below 1 for image-to-image (the LCM grid is cut from "
                                       "the top: 0.5 keeps timesteps 19..499)."),
                io.Combo.Input("preset", options=PRESET_OPTIONS, default="auto", optional=True,
                               tooltip=PRESET_TOOLTIP),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent.")],
        )

    @classmethod
    def validate_inputs(cls, steps: int | None = None, denoise: float | None = None, gamma: float | None = None,
                        cfg: float | None = None, sampler: str | None = None,
                        preset: str | None = None) -> bool | str:
        # Named inputs lose core's min/max/combo checks: check_inputs re-checks each once (finite, in range).
        return first_failure(check_gamma_input(gamma), check_schedule_inputs(steps, denoise),
                             check_inputs(cls, steps=steps, denoise=denoise, gamma=gamma, cfg=cfg, sampler=sampler,
                                          preset=preset))

    @classmethod
    def check_lazy_status(cls, model=None, negative=None, cfg=None, **_other) -> list[str]:
        """Ask the executor for ``negative`` only where sampling reads it (``samplers/guidance.py``), at the cfg
        the preset makes effective, or where core copies part of the positive onto it (old ControlNetApply,
        GLIGEN): core's own KSampler hands it the real negative there."""
        if model is not None and cfg is not None:
            cfg = _choice(model, _other.get("preset", "auto"), _other.get("sampler", "lcm"), _other.get("gamma", 0.3),
                          cfg, _other.get("steps", 4)).cfg
        if negative is None and (negative_needed(cfg, getattr(model, "model_options", None))
                                 or positive_copies_to_negative(_other.get("positive"))):
            return ["negative"]
        return []

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed: int, steps: int, cfg: float, sampler: str,
                gamma: float, denoise: float, preset: str = "auto") -> io.NodeOutput:  # noqa: PLR0913 (schema)
        choice = _choice(model, preset, sampler, gamma, cfg, steps)
        negative = _negative_or_empty(negative, choice.cfg, model, positive)
        plan = plan_sampling(model, choice, denoise)
        latent = latent_image.copy()
        samples = comfy.sample.fix_empty_latent_channels(plan.model, latent["samples"])
        latent["samples"] = samples
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
        notes: list[str] = []  # ComfyUI contacts that did not match (host/contract/): one line each
        callback = contract.preview_callback(plan.model, len(plan.sigmas) - 1, notes)
        result = contract.sample_custom(
            plan.model, noise, choice.cfg, plan.sampler, plan.sigmas, positive, negative, samples, notes,
            noise_mask=latent.get("noise_mask"), callback=callback,
            disable_pbar=not contract.progress_bar_enabled(notes), seed=seed)
        latent["samples"] = result
        report = "\n".join([plan.report, *notes])
        LOG.info("%s", report)
        return io.NodeOutput(latent, ui=ui.PreviewText(report))


def _choice(model, preset: str, sampler: str, gamma: float, cfg: float, steps: int):
    """The preset (``host/comfy_presets.resolve_preset``) merged with the node's inputs (``presets.choose``)."""
    found, why = resolve_preset(model, preset or "auto")
    return choose(found, why, sampler, float(gamma), float(cfg), int(steps), KSAMPLER_DEFAULTS)


def _negative_or_empty(negative, cfg: float, model, positive=None) -> list:
    """The negative conditioning, or ``[]`` where it was not evaluated (cfg 1: core never reads it, and an empty
    list takes core's exact path -- the sampled latent is bit-identical to the one with the real negative)."""
    if negative is not None:
        return negative
    options = getattr(model, "model_options", None)
    copied = positive_copies_to_negative(positive)
    if copied:
        raise SamplingError(f"KSamplerLCM got no negative conditioning, but the positive carries {', '.join(copied)} "
                         "that ComfyUI copies onto the negative; connect a negative conditioning.")
    if negative_needed(cfg, options):
        readers = ", ".join(uncond_readers(options)) or "none"
        raise ValueError(f"KSamplerLCM got no negative conditioning at cfg={cfg} (model options reading it: "
                         f"{readers}); connect a negative conditioning, or use cfg 1.0 on a model without them.")
    return []


NODES = [ModelSamplingLCM, LCMSampler, LCMScheduler, KSamplerLCM]
