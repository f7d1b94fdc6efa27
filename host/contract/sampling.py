"""Samplers: the pack's marker, core's k-diffusion samplers, sampling through core, previews.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring."""
from __future__ import annotations

import torch

from ...errors import ContactError
from .base import CHECKED, LINE_PREFIX, MARKER, ContactMismatch, _binds, _parameters, _resolve, line


def mark(function, kind: str):
    """Mark one of the pack's sampler functions (``kind`` "lcm", "tcd", …): found again under either import."""
    setattr(function, MARKER, kind)
    return function


def core_k_sampler(name: str):
    """Core's k-diffusion sampler function ``comfy.k_diffusion.sampling.<name>`` (e.g. ``sample_lcm``,
    ``sample_euler``), or None when it is gone. Mirrors ``comfy/k_diffusion/sampling.py``
    ``fn(model, x, sigmas, extra_args=None, callback=None, disable=None, …)``; checked on 0.3.75, 0.8.0, 0.33.0."""
    return _resolve("comfy.k_diffusion.sampling", name)


def require_core_k_sampler(name: str):
    """:func:`core_k_sampler` for a preset that runs core's sampler: a pack error naming it when it is gone."""
    function = core_k_sampler(name)
    if function is None:
        raise ContactError(f"{LINE_PREFIX} core_k_sampler: comfy.k_diffusion.sampling.{name} is not in this ComfyUI "
                           f"(checked: {CHECKED}); use the lcm or tcd sampler, or core's KSampler.")
    return function


def lcm_sampler_kind(function) -> str | None:
    """"pack lcm" (the pack's marked LCM loop) / "core lcm" (``is`` core's ``sample_lcm``) / None."""
    if getattr(function, MARKER, None) == "lcm":
        return "pack lcm"
    core = core_k_sampler("sample_lcm")
    return "core lcm" if core is not None and function is core else None


# Core sampler functions the fast path replays with its own fixed loops, by family (``samplers/fixed_loops.py``
# ``FIXED_LOOPS``): the name in ``comfy.k_diffusion.sampling``. Core's "ddim" sampler is ``sample_euler`` with
# ``inpaint_options={"random": True}`` (``comfy/samplers.py`` ``sampler_object``), so it is the euler family.
CORE_FIXED_SAMPLERS = {"sample_lcm": "lcm", "sample_euler": "euler", "sample_euler_ancestral": "euler_ancestral",
                       "sample_dpmpp_2m": "dpmpp_2m"}
# The pack's marked sampler functions the fast path replays: marker -> family.
PACK_FIXED_SAMPLERS = {"lcm": "lcm", "tcd": "tcd"}


def fixed_sampler_kind(function) -> tuple[str, str] | None:
    """``(kind, family)`` of a sampler function the fast path replays: ("pack lcm", "lcm") / ("pack tcd", "tcd")
    for the pack's marked loops, ("core <family>", family) for core's ``sample_lcm``, ``sample_euler``,
    ``sample_euler_ancestral``, ``sample_dpmpp_2m`` (by identity, ``comfy/k_diffusion/sampling.py``; each the same
    code on 0.3.75, 0.8.0, 0.33.0); else None."""
    marker = getattr(function, MARKER, None)
    if marker in PACK_FIXED_SAMPLERS:
        return f"pack {marker}", PACK_FIXED_SAMPLERS[marker]
    for name, family in CORE_FIXED_SAMPLERS.items():
        core = core_k_sampler(name)
        if core is not None and function is core:
            return f"core {family}", family
    return None


def ancestral_step(sigma_from, sigma_to):
    """(σ_down, σ_up) of one Euler-ancestral step with eta 1: core's ``get_ancestral_step(sigma_from, sigma_to,
    eta=1.)`` (``comfy/k_diffusion/sampling.py``; ``sample_euler_ancestral`` calls it per step; the same code on
    0.3.75, 0.8.0, 0.33.0), called on the same 0-d sigma tensors, so the values are core's bit for bit.
    :class:`ContactMismatch` when gone or re-signed."""
    function = core_k_sampler("get_ancestral_step")
    if function is None or not _binds(function, sigma_from, sigma_to, eta=1.0):
        raise ContactMismatch(line("ancestral_step", "comfy.k_diffusion.sampling.get_ancestral_step(sigma_from, "
                                   "sigma_to, eta=) is gone or re-signed", "running core's sampler"))
    return function(sigma_from, sigma_to, eta=1.0)


def ancestral_runs_rf(base_model) -> bool:
    """Whether core's ``sample_euler_ancestral`` hands this model to ``sample_euler_ancestral_RF``: it does when
    ``model_sampling`` is a ``comfy.model_sampling.CONST`` (flow models; ``comfy/k_diffusion/sampling.py``,
    0.3.75, 0.8.0, 0.33.0). :class:`ContactMismatch` when ``CONST`` is gone."""
    const = _resolve("comfy.model_sampling", "CONST")
    if not isinstance(const, type):
        raise ContactMismatch(line("ancestral_runs_rf", "comfy.model_sampling.CONST is gone", "running core's "
                                   "sampler"))
    return isinstance(base_model.model_sampling, const)


def inpaint_noise(sampler, noise, extra_args: dict):
    """The noise core's ``KSAMPLER.sample`` gives ``KSamplerX0Inpaint`` (``model_k.noise``; ``comfy/samplers.py``,
    the same code on 0.3.75, 0.8.0, 0.33.0): with ``inpaint_options["random"]`` (core's "ddim") a CPU draw from
    the global generator reseeded with ``torch.manual_seed(seed + 1)`` (``seed`` 41 when absent) -- drawn with or
    without a mask, as core draws it, so the global generator ends where core leaves it -- else the sampling
    noise itself."""
    if not sampler.inpaint_options.get("random", False):
        return noise
    generator = torch.manual_seed(extra_args.get("seed", 41) + 1)
    return torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)


def inpaint_scaling(base_model):
    """``base_model.scale_latent_inpaint`` where it is ``BaseModel``'s own (``comfy/model_base.py``:
    ``model_sampling.noise_scaling(σ reshaped to (B, 1, …), noise, latent_image)``, what ``KSamplerX0Inpaint``
    blends the kept region with; 0.33.0 also passes ``denoise_mask=``, which it ignores; checked on 0.3.75, 0.8.0,
    0.33.0). Models that override it (video, Cosmos, multi-latent models: host-side work, other arithmetic)
    raise :class:`ContactMismatch`: core samples them."""
    base = _resolve("comfy.model_base", "BaseModel", "scale_latent_inpaint")
    method = getattr(type(base_model), "scale_latent_inpaint", None)
    if base is None or method is not base:
        raise ContactMismatch(line("inpaint_scaling", f"{type(base_model).__name__}.scale_latent_inpaint is not "
                                   "BaseModel's noise scaling (a model-specific inpainting blend)",
                                   "running core's sampler"))
    return base_model.scale_latent_inpaint


def core_noise_sampler(x, seed):
    """Core's ``default_noise_sampler(x, seed=…)`` (``comfy/k_diffusion/sampling.py``; 0.8.0 seeds + 1 on the
    CPU); checked on 0.3.75, 0.8.0, 0.33.0. Raises :class:`ContactMismatch` when gone or re-signed."""
    factory = core_k_sampler("default_noise_sampler")
    if factory is None or not _binds(factory, x, seed=seed):
        raise ContactMismatch(line("core_noise_sampler", "comfy.k_diffusion.sampling.default_noise_sampler(x, "
                                   "seed=) is gone or re-signed", "running core's sampler"))
    return factory(x, seed=seed)


def wrapped_sampler(executor):
    """The sampler object a ``SAMPLER_SAMPLE`` wrapper wraps: ``WrapperExecutor.class_obj``
    (``comfy/patcher_extension.py``; checked on 0.3.75, 0.8.0, 0.33.0), or None when the layout differs."""
    return getattr(executor, "class_obj", None)


def sampler_max_denoise(sampler, guider, sigmas) -> bool:
    """``KSAMPLER.max_denoise(model_wrap, sigmas)`` (``comfy/samplers.py`` ``Sampler.max_denoise``: σ₀ ≥ σ_max,
    the start-noise rule); checked on 0.3.75, 0.8.0, 0.33.0. :class:`ContactMismatch` when it differs."""
    method = getattr(sampler, "max_denoise", None)
    if method is None or not _binds(method, guider, sigmas):
        raise ContactMismatch(line("sampler_max_denoise", "KSAMPLER.max_denoise(model_wrap, sigmas) is gone or "
                                   "re-signed", "running core's sampler"))
    return bool(method(guider, sigmas))


def check_max_denoise_override() -> None:
    """The pack's KSAMPLER subclasses set the start-noise rule by overriding ``max_denoise(model_wrap, sigmas)``;
    core's ``KSAMPLER.sample`` must still call it (``comfy/samplers.py``: ``noise_scaling(…, self.max_denoise(
    model_wrap, sigmas))``; checked on 0.3.75, 0.8.0, 0.33.0). Otherwise the override would be silently ignored
    (another start noise: another image), so a pack error naming the contact."""
    import comfy.samplers

    sample = getattr(getattr(comfy.samplers, "KSAMPLER", None), "sample", None)
    names = getattr(getattr(sample, "__code__", None), "co_names", ())
    method = getattr(getattr(comfy.samplers, "KSAMPLER", None), "max_denoise", None)
    if "max_denoise" not in names or _parameters(method)[1:] != ("model_wrap", "sigmas"):
        raise ContactError(f"{LINE_PREFIX} max_denoise_override: core's KSAMPLER.sample no longer calls "
                           f"max_denoise(model_wrap, sigmas) (checked: {CHECKED}); the preset's start noise cannot "
                           "be set. Use preset custom with the lcm or tcd sampler.")


def sampler_base_model(k_model):
    """The ``BaseModel`` behind the denoiser a k-diffusion sampler function receives: ``model.inner_model``
    (``KSamplerX0Inpaint`` → ``CFGGuider``) ``.inner_model`` (``BaseModel``), as ``comfy/samplers.py``
    ``KSAMPLER.sample`` builds it; checked on 0.3.75, 0.8.0, 0.33.0. A pack error naming it when it differs."""
    base_model = getattr(getattr(k_model, "inner_model", None), "inner_model", None)
    if getattr(base_model, "model_sampling", None) is None:
        raise ContactError(f"{LINE_PREFIX} sampler_base_model: the sampler's model has no inner_model.inner_model "
                           f"with a model_sampling (checked: {CHECKED}); use core's lcm sampler or KSampler.")
    return base_model


def preview_callback(model, steps: int, notes: list[str]):
    """Core's preview + progress callback ``latent_preview.prepare_callback(model, steps)`` (``latent_preview.py``;
    checked on 0.3.75, 0.8.0, 0.33.0); None (sampling without a preview) and a note when it differs."""
    prepare = _resolve("latent_preview", "prepare_callback")
    if prepare is None or not _binds(prepare, model, steps):
        notes.append(line("preview_callback", "latent_preview.prepare_callback(model, steps) is gone or re-signed",
                          "sampling without a preview"))
        return None
    return prepare(model, steps)


def progress_bar_enabled(notes: list[str]) -> bool:
    """``comfy.utils.PROGRESS_BAR_ENABLED`` (what core's KSampler passes as ``disable_pbar=not …``; checked on
    0.3.75, 0.8.0, 0.33.0); False (no progress bar) and a note when it is gone."""
    enabled = getattr(_resolve("comfy.utils"), "PROGRESS_BAR_ENABLED", None)
    if not isinstance(enabled, bool):
        notes.append(line("progress_bar_enabled", "comfy.utils.PROGRESS_BAR_ENABLED is gone",
                          "sampling without a progress bar"))
        return False
    return enabled


def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, notes: list[str],
                  **options):
    """``comfy.sample.sample_custom`` (``comfy/sample.py``: ``comfy.samplers.sample`` then the intermediate device
    and dtype); checked on 0.3.75, 0.8.0, 0.33.0. When its signature no longer takes these arguments: core's
    ``CFGGuider`` (``set_conds``, ``set_cfg``, ``sample``: what ``comfy.samplers.sample`` and ``SamplerCustom``
    run), same latent, and a note. ``options``: noise_mask, callback, disable_pbar, seed."""
    import comfy.model_management
    import comfy.samplers

    args = (model, noise, cfg, sampler, sigmas, positive, negative, latent_image)
    function = _resolve("comfy.sample", "sample_custom")
    if function is not None and _binds(function, *args, **options):
        return function(*args, **options)
    notes.append(line("sample_custom", "comfy.sample.sample_custom no longer takes (model, noise, cfg, sampler, "
                      f"sigmas, positive, negative, latent_image, {', '.join(options)})",
                      "sampled through core's CFGGuider instead"))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    samples = guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=options.get("noise_mask"),
                            callback=options.get("callback"), disable_pbar=options.get("disable_pbar", False),
                            seed=options.get("seed"))
    dtype = getattr(comfy.model_management, "intermediate_dtype", None)
    device = comfy.model_management.intermediate_device()
    return samples.to(device=device, dtype=dtype()) if dtype is not None else samples.to(device)


def torch_compile_wrapper(compiled_modules: dict):
    """Core's ``APPLY_MODEL`` wrapper that swaps compiled modules in, as ``TorchCompileModel`` does:
    ``comfy_api.torch_helpers.torch_compile.apply_torch_compile_factory`` (checked on 0.3.75, 0.8.0, 0.33.0).
    :class:`ContactMismatch` when gone (the fast path then captures the eager UNet)."""
    factory = _resolve("comfy_api.torch_helpers.torch_compile", "apply_torch_compile_factory")
    if factory is None or not _binds(factory, compiled_modules):
        raise ContactMismatch(line("torch_compile_wrapper", "comfy_api.torch_helpers.torch_compile."
                                   "apply_torch_compile_factory is gone or re-signed", "capturing the eager UNet"))
    return factory(compiled_modules)
