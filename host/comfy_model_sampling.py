"""LCM model sampling for ComfyUI models: the distillation timestep grid plus the boundary condition.

A bridge module of ``samplers`` (it imports ComfyUI's ``comfy.model_sampling`` math, no UI code).
Compared with core's ``ModelSamplingDiscrete(sampling="lcm")`` it

* takes ``original_inference_steps`` (core hard-codes 50), ``timestep_scaling`` (core: 10) and
  ``sigma_data`` (core: 0.5) as parameters;
* works for eps *and* v-prediction models: x̂₀ comes from the model's own prediction type;
* applies the skip term to the variance-preserving sample exactly as diffusers' ``LCMScheduler`` does:
  in k-diffusion units x = x_t / √ᾱ_t = x_t·√(1+σ²), so ``c_skip · x_t = c_skip · x / √(1+σ²)``
  (core multiplies c_skip by x; the two differ by ≤ 7e-6 relative at t ≥ 19).
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import comfy.model_sampling
import torch

from ..errors import SamplingError
from ..samplers.boundary import DEFAULT_SIGMA_DATA, DEFAULT_TIMESTEP_SCALING, boundary_condition_scalings
from ..samplers.timesteps import DEFAULT_ORIGINAL_INFERENCE_STEPS, check_custom_timesteps, lcm_timesteps
from . import comfy_dynamic_tables, contract
from .comfy_clone_cache import reused_clone

LOG = logging.getLogger(__name__)

PREDICTION_TYPES = {
    "eps": comfy.model_sampling.EPS,
    "v_prediction": comfy.model_sampling.V_PREDICTION,
}


class LCMDiscreteGrid(comfy.model_sampling.ModelSamplingDiscrete):
    """Discrete sampling restricted to the LCM distillation grid.

    With k = num_train_timesteps // original_inference_steps the grid holds timesteps
    t_i = i·k + (k − 1), i = 0 … original_inference_steps − 1 (k = 20 → 19, 39, …, 999), exactly the
    ``lcm_origin_timesteps`` of diffusers' ``LCMScheduler.set_timesteps``.

    The grid is core's ``sigmas`` / ``log_sigmas`` buffers (what core's schedulers read, as for core's own LCM
    sampling); the object's own lookups (timestep ↔ σ, σ_min/σ_max, the boundary) read private references to
    its tables (:data:`plain_tensors`, plain attributes, moved by ``.to()``): ComfyUI's Dynamic VRAM re-registers
    buffers by attribute path across objects (``comfy_dynamic_tables``), never these.
    """

    original_inference_steps = DEFAULT_ORIGINAL_INFERENCE_STEPS
    plain_tensors = ("train_sigmas", "grid_sigmas", "grid_log_sigmas")

    def __init__(self, model_config=None, zsnr=None):
        super().__init__(model_config, zsnr=zsnr)
        self.train_sigmas = self.sigmas.clone()  # every training timestep (TCD's σ_s); a plain attribute
        self.skip_steps = self.num_timesteps // self.original_inference_steps
        grid_timesteps = torch.arange(self.original_inference_steps) * self.skip_steps + (self.skip_steps - 1)
        self.set_sigmas(self.sigmas[grid_timesteps])

    def set_sigmas(self, sigmas):
        super().set_sigmas(sigmas)
        self.grid_sigmas, self.grid_log_sigmas = self.sigmas, self.log_sigmas

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name in self.plain_tensors:
            setattr(self, name, fn(getattr(self, name)))
        return self

    @property
    def sigma_min(self):
        return self.grid_sigmas[0]

    @property
    def sigma_max(self):
        return self.grid_sigmas[-1]

    def timestep(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma.to(self.grid_log_sigmas.device) - self.grid_log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).view(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device)

    def sigma(self, timestep):
        position = ((timestep.float().to(self.grid_log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps)
        position = torch.clamp(position, min=0, max=len(self.grid_log_sigmas) - 1)
        low, high, frac = position.floor().long(), position.ceil().long(), position.frac()
        log_sigma = (1 - frac) * self.grid_log_sigmas[low] + frac * self.grid_log_sigmas[high]
        return log_sigma.exp().to(timestep.device)


class LCMBoundary:
    """Mixin: wraps the prediction type's x̂₀ in the consistency boundary condition.

    c_skip(t) and c_out(t) are tabulated once for every training timestep (``boundary.py``'s formulas), so a step
    reads two table entries at its timestep instead of recomputing them (fewer kernel launches per step). Plain
    attributes, like the grid's private tables.
    """

    timestep_scaling = DEFAULT_TIMESTEP_SCALING
    lcm_sigma_data = DEFAULT_SIGMA_DATA
    plain_tensors = LCMDiscreteGrid.plain_tensors + ("boundary_c_skip", "boundary_c_out")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.boundary_c_skip, self.boundary_c_out = boundary_condition_scalings(
            torch.arange(self.num_timesteps), self.timestep_scaling, self.lcm_sigma_data)

    def calculate_denoised(self, sigma, model_output, model_input):
        x0 = super().calculate_denoised(sigma, model_output, model_input)
        timestep = self.timestep(sigma).long().to(self.boundary_c_skip.device)
        shape = sigma.shape[:1] + (1,) * (model_output.ndim - 1)
        c_skip = self.boundary_c_skip[timestep].view(shape).to(x0)
        c_out = self.boundary_c_out[timestep].view(shape).to(x0)
        vp_sample = model_input / (1.0 + sigma.view(shape) ** 2) ** 0.5
        return c_out * x0 + c_skip * vp_sample


def make_lcm_model_sampling(model_config, prediction_type: str = "eps", original_inference_steps: int = DEFAULT_ORIGINAL_INFERENCE_STEPS,
                            timestep_scaling: float = DEFAULT_TIMESTEP_SCALING,
                            sigma_data: float = DEFAULT_SIGMA_DATA, zsnr: bool = False, boundary: bool = True,
                            device=None, train_sigmas: torch.Tensor | None = None):
    """Build a ComfyUI model-sampling object for LCM with the given constants.

    ``boundary=False`` keeps the grid but returns the plain x̂₀ (what TCD's sampler expects). ``device``: where
    its tables live — the model's load device, so that the two sigma → timestep lookups of every step run where
    the sigmas are instead of copying them to the host and back (an object patch is not moved with the model).
    ``train_sigmas``: σ of every training timestep to build on (the betas of the sampling a model already has,
    e.g. a beta schedule AnimateDiff-Evolved set) instead of ``model_config``'s.
    """
    prediction = PREDICTION_TYPES[prediction_type]
    attributes = {
        "original_inference_steps": int(original_inference_steps),
        "timestep_scaling": float(timestep_scaling),
        "lcm_sigma_data": float(sigma_data),
    }
    bases = (LCMBoundary, LCMDiscreteGrid, prediction) if boundary else (LCMDiscreteGrid, prediction)
    sampling_class = type("LCMModelSampling" if boundary else "LCMGridSampling", bases, attributes)
    sampling = sampling_class(model_config, zsnr=zsnr)
    if train_sigmas is not None:
        use_noise_table(sampling, train_sigmas)
    return sampling if device is None else sampling.to(device)


def use_noise_table(sampling, train_sigmas: torch.Tensor):
    """Put σ of every training timestep (``train_sigmas``, T entries) into a freshly built ``sampling``: the full
    table of a discrete one, the distillation grid (and the table, for TCD's σ_s) of an LCM grid one."""
    table = train_sigmas.detach().to("cpu", torch.float32).clone()
    if len(table) != int(sampling.num_timesteps):
        raise LCMSetupError(f"a noise table of {len(table)} timesteps does not fit a {sampling.num_timesteps}-step "
                            "model sampling; use the model's own sampling (no AnimateDiff/ModelSampling node).")
    if isinstance(sampling, LCMDiscreteGrid):
        sampling.train_sigmas = table.clone()
        grid = torch.arange(sampling.original_inference_steps) * sampling.skip_steps + (sampling.skip_steps - 1)
        sampling.set_sigmas(table[grid])
    else:
        sampling.set_sigmas(table)
    return sampling


def full_noise_table(model_sampling) -> torch.Tensor | None:
    """σ at every training timestep of ``model_sampling`` when it holds them (a full discrete schedule, or the
    pack's LCM grid, which keeps a copy); None for a distilled schedule that holds only its grid (core's LCM)."""
    if isinstance(getattr(model_sampling, "train_sigmas", None), torch.Tensor):
        return model_sampling.train_sigmas
    sigmas = getattr(model_sampling, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and len(sigmas) == int(getattr(model_sampling, "num_timesteps", -1)):
        return sigmas
    return None


AUTO_ATTRIBUTE = "lcmpack_auto"  # set on model sampling the pack's loader, mixer or KSampler chose on their own


def mark_auto(sampling):
    """Mark ``sampling`` as chosen by the pack on its own (not by a user's node): :func:`chosen_sampling`."""
    setattr(sampling, AUTO_ATTRIBUTE, True)
    return sampling


def chosen_sampling(model_patcher, notes: list[str]):
    """The model sampling a node set on this model and the pack must keep, or None.

    That is an object patch ``model_sampling`` the pack did not choose on its own: AnimateDiff-Evolved's beta
    schedule, core's ``ModelSamplingDiscrete``, the pack's ``LCM Model Sampling`` node (each set after the loader).
    The LCM sampling the loader or mixer set, and a preset's, are the pack's own choice (:func:`mark_auto`), which
    a preset may replace. ``notes`` gets the contact's line where ComfyUI's object patches cannot be read.
    """
    try:
        patch = contract.object_patch(model_patcher, "model_sampling")
    except contract.ContactMismatch as mismatch:
        notes.append(str(mismatch))
        return None
    return None if patch is None or getattr(patch, AUTO_ATTRIBUTE, False) else patch


@dataclass(frozen=True)
class LCMSamplingInfo:
    """What a model's sampling object says about LCM: its grid size and whether it has the boundary."""

    original_inference_steps: int | None  # None: no distillation grid (plain 1000-step discrete sampling)
    boundary: bool
    source: str  # "pack", "core" or "none"


def lcm_sampling_info(model_sampling) -> LCMSamplingInfo:
    """Detect the pack's LCM sampling, core's ``ModelSamplingDiscrete(sampling="lcm")`` or neither."""
    if isinstance(model_sampling, LCMDiscreteGrid):
        return LCMSamplingInfo(model_sampling.original_inference_steps, isinstance(model_sampling, LCMBoundary),
                               "pack")
    core = contract.core_lcm_sampling(model_sampling)  # core's classes by identity (or a pack error naming them)
    if core is not None:
        return LCMSamplingInfo(core[0], core[1], "core")
    return LCMSamplingInfo(None, False, "none")


def is_discrete_vp_sampling(model_sampling) -> bool:
    """True for ComfyUI's discrete eps / v-prediction sampling (the family LCM and TCD are defined for)."""
    return (isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete)
            and isinstance(model_sampling, comfy.model_sampling.EPS)
            and not isinstance(model_sampling, (comfy.model_sampling.CONST, comfy.model_sampling.X0,
                                                comfy.model_sampling.EDM)))


def training_sigmas(model_sampling, model_config=None) -> torch.Tensor:
    """σ at every training timestep 0 … T−1 (the grid classes keep a copy; core's distilled one is rebuilt)."""
    table = full_noise_table(model_sampling)
    if table is not None:
        return table
    full = comfy.model_sampling.ModelSamplingDiscrete(model_config, zsnr=getattr(model_sampling, "zsnr", None))
    return full.sigmas.to(model_sampling.sigmas.device)


def schedule_sigmas(model_sampling, timesteps: list[int]) -> torch.Tensor:
    """SIGMAS for ``timesteps`` on this model (σ of each timestep, then a final 0), checked to round-trip.

    A timestep the model's sampling cannot represent exactly (off the grid of an LCM-patched model) is an
    error, because ComfyUI would silently snap it to the nearest grid timestep.
    """
    steps = torch.tensor(timesteps, dtype=torch.float32)
    sigmas = model_sampling.sigma(steps).float().cpu()
    round_trip = model_sampling.timestep(sigmas).long().tolist()
    wrong = [(t, r) for t, r in zip(timesteps, round_trip, strict=True) if int(t) != int(r)]
    if wrong:
        info = lcm_sampling_info(model_sampling)
        raise LCMSetupError(
            f"timesteps {[t for t, _ in wrong]} are not on this model's sampling grid (they would run as "
            f"{[r for _, r in wrong]}); the model has an LCM grid of original_inference_steps="
            f"{info.original_inference_steps}. Use timesteps on that grid, or sample a model without the LCM "
            "model-sampling patch for off-grid timesteps.")
    return torch.cat([sigmas, sigmas.new_zeros(1)])


class LCMSetupError(SamplingError):
    """A model cannot be sampled with LCM/TCD as asked; the message names the cause and the fix."""


def sampling_prediction_type(model_sampling) -> str:
    """"v_prediction" or "eps", read from the (possibly patched) sampling object itself."""
    return "v_prediction" if isinstance(model_sampling, comfy.model_sampling.V_PREDICTION) else "eps"


def check_lcm_capable(model_sampling) -> None:
    """LCM and TCD are defined for discrete eps / v-prediction diffusion (SD1.x, SD2.x, SDXL families)."""
    if not is_discrete_vp_sampling(model_sampling):
        raise LCMSetupError(
            f"LCM/TCD sampling needs a discrete eps or v-prediction model (SD1.5, SD2, SDXL families); this model "
            f"samples with {type(model_sampling).__name__}. Use the model's own sampler instead.")


def resolve_original_steps(model_sampling, requested: int = 0) -> int:
    """The grid size to use: ``requested``, or (0) the model's LCM constant, or 50 for an unpatched model."""
    grid = lcm_sampling_info(model_sampling).original_inference_steps
    if int(requested) == 0:
        return grid or DEFAULT_ORIGINAL_INFERENCE_STEPS
    if grid is not None and grid != int(requested):
        raise LCMSetupError(
            f"original_inference_steps={requested} does not match the model's LCM model sampling "
            f"(original_inference_steps={grid}); set it to 0 (follow the model) or to {grid}.")
    return int(requested)


def lcm_schedule(model_sampling, steps: int, denoise: float = 1.0, original_inference_steps: int = 0,
                 custom_timesteps: list[int] | None = None) -> torch.Tensor:
    """SIGMAS on the LCM grid of this model (diffusers' rule; ``denoise`` = ``strength``), ending in 0.

    Kept per sampling object and arguments (weakly: it goes with the object), so a re-queued ``KSamplerLCM``
    does not recompute the grid and its round-trip check on the device.
    """
    key = (int(steps), float(denoise), int(original_inference_steps), tuple(custom_timesteps or ()))
    per_object = _SCHEDULES.setdefault(model_sampling, {})
    if key not in per_object:
        per_object[key] = _lcm_schedule(model_sampling, *key[:3], list(key[3]) or None)
    return per_object[key].clone()


_SCHEDULES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model_sampling -> {arguments: sigmas}


def _lcm_schedule(model_sampling, steps: int, denoise: float, original_inference_steps: int,
                  custom_timesteps: list[int] | None) -> torch.Tensor:
    check_lcm_capable(model_sampling)
    original_steps = resolve_original_steps(model_sampling, original_inference_steps)
    num_train = int(model_sampling.num_timesteps)
    if custom_timesteps:
        schedule = check_custom_timesteps(custom_timesteps, original_steps, denoise, num_train)
        for message in schedule.warnings:
            LOG.warning("LCM schedule: %s", message)
        timesteps = schedule.timesteps
    else:
        timesteps = lcm_timesteps(steps, original_steps, denoise, num_train)
    return schedule_sigmas(model_sampling, timesteps)


def needs_lcm_patch(model_sampling, boundary: bool = True) -> bool:
    """Whether :func:`with_lcm_sampling` has to patch a clone (checks LCM/TCD capability first)."""
    check_lcm_capable(model_sampling)
    info = lcm_sampling_info(model_sampling)
    return info.boundary != boundary and not (info.source == "none" and not boundary)


def _ready(model_patcher, boundary: bool) -> bool:
    """True when the model already has the sampling it needs."""
    return not needs_lcm_patch(model_patcher.get_model_object("model_sampling"), boundary)


def reused_lcm_sampling(model_patcher, boundary: bool = True):
    """:func:`with_lcm_sampling`, returning the same patched clone again for the same, unchanged input model.

    ComfyUI then sees the same ModelPatcher on every execution and skips its re-load bookkeeping
    (``comfy_clone_cache`` has the lifetime and invalidation rules). The input model is never mutated.
    """
    if _ready(model_patcher, boundary):
        return model_patcher
    return reused_clone(model_patcher, ("lcm_sampling", bool(boundary)),
                        lambda model: with_lcm_sampling(model, boundary))


def lcm_patched_clone(model_patcher, sampling=None):
    """A clone with ``sampling`` (if given) as its model sampling; nothing else about how core samples changes.
    Under Dynamic VRAM the clone keeps ``sampling``'s tables its own across loads (``comfy_dynamic_tables``)."""
    patched = model_patcher.clone()
    if sampling is not None:
        patched.add_object_patch("model_sampling", sampling)
        comfy_dynamic_tables.protect(patched, sampling)
    return patched


def with_lcm_sampling(model_patcher, boundary: bool = True):
    """The model set up for LCM (``boundary=True``) or TCD (``False``): a patched clone, or the model as is.

    LCM needs the consistency boundary: a model without the pack's or core's LCM sampling gets the pack's with
    its grid constants (or the defaults), on the betas of the sampling it has (its full noise table: the
    checkpoint's, or a beta schedule another node set, e.g. AnimateDiff-Evolved's ``sqrt_linear``). TCD needs the plain x̂₀: a boundary-patched model gets the same grid
    without the boundary; a plain discrete model keeps its sampling. The input model is never mutated; a model that
    needs nothing is returned as is.
    """
    model_sampling = model_patcher.get_model_object("model_sampling")
    if not needs_lcm_patch(model_sampling, boundary):
        return model_patcher
    info = lcm_sampling_info(model_sampling)
    return lcm_patched_clone(model_patcher, mark_auto(make_lcm_model_sampling(
        model_patcher.model.model_config, sampling_prediction_type(model_sampling),
        info.original_inference_steps or DEFAULT_ORIGINAL_INFERENCE_STEPS,
        getattr(model_sampling, "timestep_scaling", DEFAULT_TIMESTEP_SCALING),
        getattr(model_sampling, "lcm_sigma_data", DEFAULT_SIGMA_DATA),
        zsnr=bool(getattr(model_sampling, "zsnr", False)), boundary=boundary, device=model_patcher.load_device,
        train_sigmas=full_noise_table(model_sampling))))
