"""The pack's one contract with ComfyUI's internals: one function per contact.

Everything the pack reads or calls in ComfyUI that is not its public API (``comfy_api.latest``, the documented
node and ``ModelPatcher`` APIs: clone, add_patches, add_object_patch, wrappers, model options) goes through a
function here. Each docstring names the core code it mirrors and the versions it was checked on
(:data:`CHECKED`). The rule, for a ComfyUI nobody tested:

    a contact that does not match (a symbol gone, a signature, an attribute, a layout) falls back to core's
    public path with one report line on the node saying what differed -- the image stays core's -- or, where
    core has no public path, raises :class:`errors.ContactError` naming the contact. Never a silently
    different image.

Contacts are resolved at use, never at import, so a missing symbol costs one feature, not the pack. The pack's
own functions are recognised by a marker attribute (:func:`mark`), core's by identity (``is``), never by module
name strings. Report lines start with :data:`LINE_PREFIX`.

Treated as public (the documented extension points every custom-node pack builds on, used directly): the
``ModelPatcher`` methods (clone, add_patches, add_object_patch, get_model_object, wrappers and callbacks of
``comfy.patcher_extension``), ``comfy.samplers.KSAMPLER`` / ``CFGGuider`` to build samplers and guiders, the
``comfy.model_sampling`` classes to subclass, ``comfy.sample.prepare_noise`` / ``fix_empty_latent_channels``,
``comfy.model_management``'s device and loading functions, ``folder_paths`` and ``comfy_api.latest``.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass

import torch

from ..errors import ContactError

CHECKED = "ComfyUI 0.3.75, 0.8.0, 0.33.0"
LINE_PREFIX = "ComfyUI contact"
MARKER = "lcmpack_sampler"  # attribute naming the pack's own sampler functions (any import of the pack)


class ContactMismatch(RuntimeError):
    """Internal: a contact does not match; ``str()`` is the report line. Callers fall back to core's path."""


def line(contact: str, what: str, fallback: str) -> str:
    """The one report line of a contact that did not match."""
    return f"{LINE_PREFIX} {contact}: {what}; {fallback}."


def _resolve(module: str, *attributes: str):
    """``module.attr.attr…`` or None when the module or an attribute is gone (checked at use, not import)."""
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    for name in attributes:
        found = getattr(found, name, None)
        if found is None:
            return None
    return found


def _binds(function, *args, **kwargs) -> bool:
    """Whether ``function(*args, **kwargs)`` matches its signature (a renamed or new required argument: no)."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return False
    return True


def _parameters(function) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


# ---- samplers ---------------------------------------------------------------------------------------------


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


# Core sampler functions the fast path replays with its own fixed loops, by family (``samplers/fast_path.py``
# ``FIXED_LOOPS``): the name in ``comfy.k_diffusion.sampling``.
CORE_FIXED_SAMPLERS = {"sample_lcm": "lcm", "sample_euler": "euler"}


def fixed_sampler_kind(function) -> tuple[str, str] | None:
    """``(kind, family)`` of a sampler function the fast path replays: ("pack lcm", "lcm") for the pack's marked LCM
    loop, ("core lcm", "lcm") / ("core euler", "euler") for core's ``sample_lcm`` / ``sample_euler`` (by identity,
    ``comfy/k_diffusion/sampling.py``; ``sample_euler`` is the same code on 0.3.75, 0.8.0, 0.33.0); else None."""
    if getattr(function, MARKER, None) == "lcm":
        return "pack lcm", "lcm"
    for name, family in CORE_FIXED_SAMPLERS.items():
        core = core_k_sampler(name)
        if core is not None and function is core:
            return f"core {family}", family
    return None


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


# ---- model sampling and model configs ---------------------------------------------------------------------


def _node_globals(node_id: str, *names: str) -> dict:
    """The module namespace of core node ``node_id``'s function (``nodes.NODE_CLASS_MAPPINGS``; a V1 node's
    ``FUNCTION`` or a V3 node's ``execute``) that holds ``names``: the very objects core's node uses, whatever
    module they are defined in. Empty when none does."""
    mappings = getattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS", None) or {}
    node = mappings.get(node_id)
    for attribute in (str(getattr(node, "FUNCTION", "execute")), "execute", "define_schema"):
        function = getattr(node, attribute, None)
        namespace = getattr(getattr(function, "__func__", function), "__globals__", {})
        if all(name in namespace for name in names):
            return namespace
    return {}


def core_lcm_sampling(model_sampling) -> tuple[int, bool] | None:
    """``(original_timesteps, has the LCM boundary)`` when ``model_sampling`` is core's
    ``ModelSamplingDiscrete(sampling="lcm")`` (``ModelSamplingDiscreteDistilled`` + ``LCM`` of
    ``comfy_extras/nodes_model_advanced.py``; checked on 0.3.75, 0.8.0, 0.33.0), or derives from those classes,
    else None. ComfyUI loads that file twice over: as the module of core's ModelSamplingDiscrete node (a path-named
    module, ``nodes.load_custom_node``) and, for any pack that imports ``comfy_extras.nodes_model_advanced``, under
    that name (AnimateDiff-Evolved builds its ``lcm`` beta schedules on it) -- two sets of classes, both matched by
    identity. When the node's classes cannot be found and an object that looks distilled (``original_timesteps``)
    matches neither set, a pack error: treating it as plain would change the image."""
    def pair(space) -> tuple[type, type] | None:
        distilled, lcm = space.get("ModelSamplingDiscreteDistilled"), space.get("LCM")
        return (distilled, lcm) if isinstance(distilled, type) and isinstance(lcm, type) else None

    node_pair = pair(_node_globals("ModelSamplingDiscrete", "ModelSamplingDiscreteDistilled", "LCM"))
    imported = sys.modules.get("comfy_extras.nodes_model_advanced")  # there only where some pack imported it
    for distilled, lcm in filter(None, (node_pair, pair(vars(imported)) if imported else None)):
        if isinstance(model_sampling, distilled):
            return int(model_sampling.original_timesteps), isinstance(model_sampling, lcm)
    if node_pair is None and hasattr(model_sampling, "original_timesteps"):
        raise ContactError(
            f"{LINE_PREFIX} core_lcm_sampling: core's ModelSamplingDiscreteDistilled / LCM classes are not in "
            f"the namespace of core's ModelSamplingDiscrete node (checked: {CHECKED}), so the pack cannot tell "
            f"whether {type(model_sampling).__name__} is core's LCM sampling. Remove the ModelSamplingDiscrete "
            "(lcm) node (the pack's loader and KSampler (LCM) set LCM sampling themselves).")
    return None


def core_sampling_classes() -> frozenset:
    """The classes of ``comfy.model_sampling`` (EPS, V_PREDICTION, ModelSamplingDiscrete, …), by identity."""
    module = _resolve("comfy.model_sampling")
    return frozenset(value for value in vars(module).values() if isinstance(value, type)) if module else frozenset()


def object_patch(model_patcher, name: str):
    """The object patch ``name`` of ``model_patcher`` (what a node set with ``add_object_patch``), or None when it has
    none: core's ``ModelPatcher.object_patches`` dict, which ``add_object_patch`` writes and ``clone`` copies
    (``comfy/model_patcher.py``; checked on 0.3.75, 0.8.0, 0.33.0). ``get_model_object`` cannot tell a patch from
    the model's own attribute. Not a dict: :class:`ContactMismatch` (the caller treats the model as having no
    chosen patch, with the report line)."""
    patches = getattr(model_patcher, "object_patches", None)
    if not isinstance(patches, dict):
        raise ContactMismatch(line("object_patch", "ModelPatcher.object_patches is not a dict in this ComfyUI",
                                   f"treating {name!r} as not set by another node"))
    return patches.get(name)


def config_family(model_config, families: dict[str, str]) -> str | None:
    """The family of a ``model_config`` whose class is (or derives from) one of core's ``comfy.supported_models``
    classes named in ``families`` (name → family), matched by identity along the MRO; None when none is
    (checked on 0.3.75, 0.8.0, 0.33.0; a renamed class is simply not matched)."""
    module = _resolve("comfy.supported_models")
    table = {getattr(module, name): family for name, family in families.items() if getattr(module, name, None)}
    for cls in type(model_config).__mro__:
        if cls in table:
            return table[cls]
    return None


def model_file_name(model_patcher) -> str | None:
    """The file name a model was loaded from, where core records it: ``ModelPatcher.cached_patcher_init`` =
    ``(comfy.sd.load_diffusion_model, (unet_path, model_options))`` (UNETLoader) or
    ``(comfy.sd.load_checkpoint_guess_config, (ckpt_path, …), 0)`` (checkpoint loaders), recognised by identity
    (``comfy/model_patcher.py`` / ``comfy/sd.py`` of 0.33.0; 0.3.75 has no such attribute). None otherwise: the
    caller says in its report that the file is not known (nothing falls back: only a check is skipped)."""
    init = getattr(model_patcher, "cached_patcher_init", None)
    loaders = [_resolve("comfy.sd", name) for name in ("load_diffusion_model", "load_checkpoint_guess_config")]
    if not isinstance(init, tuple) or len(init) < 2 or not any(init[0] is f for f in loaders if f is not None):
        return None
    args = init[1]
    path = args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else None
    return path.replace("\\", "/").rsplit("/", 1)[-1] if path else None


# ---- LoRA --------------------------------------------------------------------------------------------------


def lora_key_maps(model_patcher, clip) -> tuple[dict, dict | None]:
    """Core's LoRA key maps ``comfy.lora.model_lora_keys_unet(model.model, {})`` and ``model_lora_keys_clip(
    clip.cond_stage_model, {})`` (``comfy/lora.py``; checked on 0.3.75, 0.8.0, 0.33.0). Without them no LoRA can
    be matched to the model, so a pack error naming the contact."""
    unet_keys = _resolve("comfy.lora", "model_lora_keys_unet")
    clip_keys = _resolve("comfy.lora", "model_lora_keys_clip")
    if unet_keys is None or clip_keys is None or not _binds(unet_keys, model_patcher.model, {}):
        raise ContactError(f"{LINE_PREFIX} lora_key_maps: comfy.lora.model_lora_keys_unet / model_lora_keys_clip "
                           f"are gone or re-signed in this ComfyUI (checked: {CHECKED}); nothing was patched. Use "
                           "core's LoraLoader, or a ComfyUI version the pack supports.")
    clip_map = clip_keys(clip.cond_stage_model, {}) if clip is not None else None
    return unet_keys(model_patcher.model, {}), clip_map


@dataclass(frozen=True)
class AdapterCheck:
    """Whether core's ``LoRAAdapter`` has the layout the pack builds; ``why`` says what differed."""

    adapter: type | None
    why: str = ""


def lora_adapter_layout() -> AdapterCheck:
    """``comfy.weight_adapter.lora.LoRAAdapter(loaded_keys, weights)`` with ``weights = (up, down, alpha, mid,
    dora_scale, reshape)``, probed through core's own ``LoRAAdapter.load`` on a 1×1 LoRA (checked on 0.3.75,
    0.8.0, 0.33.0)."""
    adapter = _resolve("comfy.weight_adapter.lora", "LoRAAdapter")
    if adapter is None:
        return AdapterCheck(None, "comfy.weight_adapter.lora.LoRAAdapter is gone")
    probe = {"probe.lora_up.weight": torch.ones(1, 1), "probe.lora_down.weight": torch.ones(1, 1)}
    try:
        built = adapter.load("probe", probe, 1.0, None)
    except Exception as error:  # noqa: BLE001  (any failure of core's loader means: do not build it by hand)
        return AdapterCheck(None, f"LoRAAdapter.load(x, lora, alpha, dora_scale) failed ({type(error).__name__})")
    weights = getattr(built, "weights", None)
    if not isinstance(weights, tuple) or len(weights) != 6 or weights[3:] != (None, None, None):
        size = len(weights) if isinstance(weights, tuple) else type(weights).__name__
        return AdapterCheck(None, f"LoRAAdapter.weights has {size} fields (checked: 6)")
    if _parameters(adapter.__init__)[1:] != ("loaded_keys", "weights"):
        return AdapterCheck(None, "LoRAAdapter's constructor is not (loaded_keys, weights)")
    return AdapterCheck(adapter)


def lora_patches(modules: dict, notes: list[str]) -> dict:
    """``{weight key: patch}`` for plain LoRA modules ``{weight key: (up, down, alpha)}``: core's ``LoRAAdapter``
    as ``comfy.lora.load_lora`` builds it. When its layout differs (:func:`lora_adapter_layout`), the patches are
    built by core's ``load_lora`` itself from kohya-named tensors (same patches), with a note."""
    check = lora_adapter_layout()
    if check.adapter is not None:
        return {key: check.adapter(set(), (up, down, float(alpha), None, None, None))
                for key, (up, down, alpha) in modules.items()}
    notes.append(line("lora_patches", check.why, "patches built by core's comfy.lora.load_lora"))
    tensors, targets = {}, {}
    for index, (key, (up, down, alpha)) in enumerate(modules.items()):
        name = f"lcmpack_{index}"
        tensors |= {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down,
                    f"{name}.alpha": torch.tensor(float(alpha))}
        targets[name] = key
    return core_lora_patches(tensors, targets)


def core_lora_patches(tensors: dict, targets: dict) -> dict:
    """``comfy.lora.load_lora(lora, to_load, log_missing=False)`` (``comfy/lora.py``: core's parser of every
    adapter type; checked on 0.3.75, 0.8.0, 0.33.0). A pack error naming it when gone or re-signed."""
    load = _resolve("comfy.lora", "load_lora")
    if load is None or not _binds(load, tensors, targets, log_missing=False):
        raise ContactError(f"{LINE_PREFIX} core_lora_patches: comfy.lora.load_lora(lora, to_load, log_missing) is "
                           f"gone or re-signed (checked: {CHECKED}); nothing was patched. Use core's LoraLoader.")
    return load(tensors, targets, log_missing=False)


# What core passes to an adapter's calculate_weight (comfy/lora.py calculate_weight), after self.
ADAPTER_CALCULATE_WEIGHT = ("weight", "key", "strength", "strength_model", "offset", "function", "intermediate_dtype",
                            "original_weight")


def weight_adapter_base() -> AdapterCheck:
    """Core's adapter contract the mixer's adapter must satisfy: base class ``comfy.weight_adapter.
    WeightAdapterBase`` (``comfy.lora.calculate_weight`` dispatches on it), constructor ``(loaded_keys, weights)``
    (0.33's Dynamic VRAM rebuilds adapters as ``type(a)(a.loaded_keys, prefetched a.weights)`` in
    ``comfy.lora.prefetch_prepared_value``), and ``calculate_weight`` taking :data:`ADAPTER_CALCULATE_WEIGHT`
    (read off core's ``LoRAAdapter``). Checked on 0.3.75, 0.8.0, 0.33.0."""
    base = _resolve("comfy.weight_adapter", "WeightAdapterBase")
    core_lora = _resolve("comfy.weight_adapter.lora", "LoRAAdapter")
    if base is None or core_lora is None or not issubclass(core_lora, base):
        return AdapterCheck(None, "comfy.weight_adapter.WeightAdapterBase (the base of LoRAAdapter) is gone")
    if _parameters(core_lora.__init__)[1:] != ("loaded_keys", "weights"):
        return AdapterCheck(None, "weight adapters are no longer built as (loaded_keys, weights)")
    if _parameters(core_lora.calculate_weight)[1:] != ADAPTER_CALCULATE_WEIGHT:
        found = ", ".join(_parameters(core_lora.calculate_weight)[1:])
        return AdapterCheck(None, f"an adapter's calculate_weight takes ({found}) (checked: "
                                  f"{', '.join(ADAPTER_CALCULATE_WEIGHT)})")
    return AdapterCheck(base)


# ---- the opt-in real-time path ----------------------------------------------------------------------------

VAE_DECODE_PARTS = ("first_stage_model", "process_output", "memory_used_decode", "vae_dtype", "patcher", "device",
                    "output_device", "disable_offload")


def vae_decode_mismatch(vae) -> str | None:
    """None when ``vae`` has the parts of ``comfy.sd.VAE.decode`` the fast decode replays (:data:`VAE_DECODE_PARTS`,
    ``first_stage_model.decode``; checked on 0.3.75, 0.8.0, 0.33.0), else the report line (core's ``VAE.decode``).
    0.33's decoders that write into a preallocated buffer (``comfy_has_chunked_io``) and an output dtype other than
    float32 (``VAE.vae_output_dtype()``) take another path in core: they fall back too."""
    missing = [name for name in VAE_DECODE_PARTS if not hasattr(vae, name)]
    if not missing and not callable(getattr(vae.first_stage_model, "decode", None)):
        missing = ["first_stage_model.decode"]
    if missing:
        return line("vae_decode_parts", f"the VAE has no {', '.join(missing)}", "running ComfyUI's VAE.decode")
    output_dtype = getattr(vae, "vae_output_dtype", None)
    if getattr(vae.first_stage_model, "comfy_has_chunked_io", False) or (
            callable(output_dtype) and output_dtype() != torch.float32):
        return line("vae_decode_parts", "the VAE decodes into a preallocated buffer or to a dtype other than "
                    "float32", "running ComfyUI's VAE.decode")
    return None


def wrapper_names(model_options: dict, kinds) -> list[str]:
    """``"kind:key"`` of every wrapper of ``kinds`` in ``model_options``: the layout ``transformer_options
    ["wrappers"][kind][key] = [wrapper, …]`` of ``comfy/patcher_extension.py`` (checked on 0.3.75, 0.8.0, 0.33.0).
    Another layout: core's public ``get_all_wrappers`` decides, a wrapper then named ``kind:?``."""
    wrappers = model_options.get("transformer_options", {}).get("wrappers", {})
    names = []
    for kind in kinds:
        found = wrappers.get(kind, {}) if isinstance(wrappers, dict) else None
        if isinstance(found, dict):
            names += [f"{kind}:{key}" for key, listed in found.items() if listed]
            continue
        import comfy.patcher_extension as extensions

        if extensions.get_all_wrappers(kind, model_options, is_model_options=True):
            names.append(f"{kind}:?")
    return names


def step_transformer_options(base_model, model_options: dict, index: int, cond: dict, timestep) -> dict:
    """:func:`batch_transformer_options` for a batch of one conditioning (``index``, ``cond``)."""
    return batch_transformer_options(base_model, model_options, [index], [cond["uuid"]], timestep)


def batch_transformer_options(base_model, model_options: dict, order: list[int], uuids: list, timestep) -> dict:
    """The ``transformer_options`` core's private ``_calc_cond_batch`` (``comfy/samplers.py``) passes for one batched
    model call: ``model.current_patcher.apply_hooks(hooks=None)`` merged with the model options'
    ``transformer_options``, plus ``cond_or_uncond`` (``order``: 0 cond, 1 uncond, in batch order), ``uuids``,
    ``sigmas`` (the unbatched timestep); checked on 0.3.75, 0.8.0, 0.33.0. :class:`ContactMismatch` when the
    patcher has no ``apply_hooks``."""
    import comfy.patcher_extension as extensions

    apply_hooks = getattr(getattr(base_model, "current_patcher", None), "apply_hooks", None)
    if apply_hooks is None or not _binds(apply_hooks, hooks=None):
        raise ContactMismatch(line("step_transformer_options", "BaseModel.current_patcher.apply_hooks(hooks=) is "
                                   "gone", "running core's sampler"))
    options = apply_hooks(hooks=None)
    if "transformer_options" in model_options:
        options = extensions.merge_nested_dicts(options, model_options["transformer_options"], copy_dict1=False)
    options["cond_or_uncond"] = list(order)
    options["uuids"] = list(uuids)
    options["sigmas"] = timestep
    return options


def guider_mismatch(guider) -> str | None:
    """None when the guider has what the fast path reads of core's ``CFGGuider`` (``comfy/samplers.py``:
    ``conds`` by name, ``inner_model`` the ``BaseModel`` with ``diffusion_model``, ``apply_model`` and
    ``model_sampling``, ``model_patcher``; ``comfy.samplers.cond_cat``), checked on 0.3.75, 0.8.0, 0.33.0; else
    the report line (core's sampler runs)."""
    base_model = getattr(guider, "inner_model", None)
    missing = [name for name in ("conds", "inner_model", "model_patcher") if not hasattr(guider, name)]
    missing += [f"inner_model.{name}" for name in ("diffusion_model", "apply_model", "model_sampling")
                if base_model is not None and not hasattr(base_model, name)]
    if not isinstance(getattr(guider, "conds", None), dict):
        missing.append("conds (a dict)")
    if _resolve("comfy.samplers", "cond_cat") is None:
        missing.append("comfy.samplers.cond_cat")
    if not missing:
        return None
    return line("guider_parts", f"the sampler's guider has no {', '.join(dict.fromkeys(missing))}",
                "running core's sampler")


def cond_inputs(cond: dict, batch: int) -> dict:
    """The model inputs of one conditioning entry as core's ``_calc_cond_batch`` builds them for a batch of it
    (:func:`batched_cond_inputs` of one entry)."""
    batched = batched_cond_inputs([cond], batch)
    if batched is None:  # one entry always concatenates with itself
        raise ContactMismatch(line("cond_inputs", "a conditioning does not concatenate with itself",
                                   "running core's sampler"))
    return batched[0]


def batched_cond_inputs(conds: list[dict], batch: int) -> tuple[dict, dict] | None:
    """The model inputs of one batched model call over the conditioning entries ``conds`` (in batch order), as
    core's ``_calc_cond_batch`` builds them: ``process_cond(batch_size=, area=None)`` of each ``model_conds``
    value, joined by ``comfy.samplers.cond_cat``, and the ``cond_shapes`` core's memory estimate reads (each
    processed value's ``size()``); None where core would not put them in one call (``can_concat_cond`` /
    ``cond_equal_size``: the same keys, each processed value's ``can_concat`` with the first's). Checked on 0.3.75,
    0.8.0, 0.33.0. :class:`ContactMismatch` when an entry has another layout."""
    cond_cat = _resolve("comfy.samplers", "cond_cat")
    processed = []
    for cond in conds:
        model_conds = cond.get("model_conds")
        process = [getattr(value, "process_cond", None) for value in (model_conds or {}).values()]
        if not isinstance(model_conds, dict) or cond_cat is None or not all(
                p and _binds(p, batch_size=batch, area=None) for p in process):
            raise ContactMismatch(line("cond_inputs", "a conditioning's model_conds / process_cond(batch_size=, "
                                       "area=) / comfy.samplers.cond_cat differ", "running core's sampler"))
        processed.append({name: value.process_cond(batch_size=batch, area=None) for name, value in model_conds.items()})
    first = processed[0]
    for other in processed[1:]:
        if other.keys() != first.keys() or not all(callable(getattr(first[k], "can_concat", None))
                                                    and first[k].can_concat(other[k]) for k in first):
            return None
    shapes = {name: [entry[name].size() for entry in processed if callable(getattr(entry[name], "size", None))]
              for name in first}
    return cond_cat(processed), shapes


def cond_batch_fits(base_model, x: torch.Tensor, chunks: int, cond_shapes: dict) -> bool:
    """Whether core's ``_calc_cond_batch`` runs ``chunks`` conditioning entries of ``x``'s shape as one model call:
    ``model.memory_required([chunks·B, …], cond_shapes=) * 1.5 < free memory``, the free memory from
    ``model.current_patcher.get_free_memory(device)`` (0.33.0) or ``comfy.model_management.get_free_memory(device)``
    (0.3.75, 0.8.0). :class:`ContactMismatch` when ``memory_required`` is gone or re-signed."""
    import comfy.model_management

    shape = [chunks * x.shape[0], *x.shape[1:]]
    required = getattr(base_model, "memory_required", None)
    if required is None or not _binds(required, shape, cond_shapes=cond_shapes):
        raise ContactMismatch(line("cond_batch_fits", "BaseModel.memory_required(input_shape, cond_shapes=) is gone "
                                   "or re-signed", "running core's sampler"))
    free = getattr(getattr(base_model, "current_patcher", None), "get_free_memory", None)
    free_memory = free(x.device) if callable(free) else comfy.model_management.get_free_memory(x.device)
    return required(shape, cond_shapes=cond_shapes) * 1.5 < free_memory


# What the fast path reads of core's ``comfy.controlnet.ControlNet`` (the same class on 0.3.75, 0.8.0, 0.33.0).
CONTROL_PARTS = ("control_model", "compression_ratio", "upscale_algorithm", "preprocess_image", "cond_hint_original",
                 "manual_cast_dtype", "extra_args", "extra_conds", "strength", "timestep_range", "previous_controlnet",
                 "latent_format", "extra_concat_orig", "control_merge")


def fast_control_mismatch(control) -> str | None:
    """None when ``control`` is core's plain ``comfy.controlnet.ControlNet`` (by identity, not a subclass: Qwen-Fun,
    T2I adapters and ControlLoRA compute otherwise) in the state ``pre_run`` leaves it (``timestep_range`` set), one
    ControlNet (no previous one), an image hint (no ``latent_format`` / VAE-encoded hint, no extra concat, no
    per-device clones); checked on 0.3.75, 0.8.0, 0.33.0. Else why not (core's sampler runs)."""
    core = _resolve("comfy.controlnet", "ControlNet")
    if core is None or type(control) is not core:
        return f"the control is a {type(control).__name__}, not core's ControlNet"
    missing = [name for name in CONTROL_PARTS if not hasattr(control, name)]
    if missing:
        return line("fast_control_parts", f"the ControlNet has no {', '.join(missing)}", "running core's sampler")
    if control.previous_controlnet is not None:
        return "more than one ControlNet on the conditioning"
    if (control.latent_format is not None or getattr(control, "vae", None) is not None or control.extra_concat_orig
            or getattr(control, "multigpu_clones", None) or control.timestep_range is None
            or (control.extra_conds and _resolve("comfy.model_base", "convert_tensor") is None)):
        return "a ControlNet with a latent hint, extra inputs or per-device clones"
    return None


def control_step_active(control, sigma: float) -> bool:
    """Whether core's ``ControlNet.get_control`` applies the ControlNet at σ (``comfy/controlnet.py``: not when
    ``t[0] > timestep_range[0] or t[0] < timestep_range[1]``, float32 σ against the range's floats); decided on
    the host from the sigma list, since a capture cannot read the device value."""
    t = torch.tensor([sigma], dtype=torch.float32)
    return not bool(t[0] > control.timestep_range[0] or t[0] < control.timestep_range[1])


def control_hint(control, x: torch.Tensor, batched_number: int) -> torch.Tensor:
    """The hint core's ``ControlNet.get_control`` builds for latent ``x`` (``comfy/controlnet.py``: the original
    hint upscaled by ``comfy.utils.common_upscale`` to x·compression_ratio, ``center`` crop, ``preprocess_image``,
    to x's device in the control dtype, ``broadcast_image_to(hint, B, batched_number)``); checked on 0.3.75,
    0.8.0, 0.33.0. :class:`ContactMismatch` when a helper is gone."""
    upscale = _resolve("comfy.utils", "common_upscale")
    broadcast = _resolve("comfy.controlnet", "broadcast_image_to")
    if upscale is None or broadcast is None:
        raise ContactMismatch(line("control_hint", "comfy.utils.common_upscale / comfy.controlnet.broadcast_image_to "
                                   "are gone", "running core's sampler"))
    ratio = control.compression_ratio
    hint = upscale(control.cond_hint_original, x.shape[-1] * ratio, x.shape[-2] * ratio, control.upscale_algorithm,
                   "center")
    hint = control.preprocess_image(hint).to(device=x.device, dtype=control_dtype(control))
    return broadcast(hint, x.shape[0], batched_number) if x.shape[0] != hint.shape[0] else hint


def control_dtype(control):
    """``manual_cast_dtype`` or the control model's dtype (``ControlNet.get_control``)."""
    return control.manual_cast_dtype if control.manual_cast_dtype is not None else control.control_model.dtype


def control_forward(control, model_sampling, x: torch.Tensor, t: torch.Tensor, inputs: dict, hint: torch.Tensor):
    """The residuals core's ``ControlNet.get_control`` returns for batch ``x`` at ``t`` (after the range and hint
    steps, which the fast path decides and builds before the replay): ``control_model(x=calculate_input(t,
    x), hint, timesteps=timestep(t), context=crossattn_controlnet or c_crossattn, **extra_args)`` cast to the
    control dtype, then ``control_merge`` (strength); checked on 0.3.75, 0.8.0, 0.33.0."""
    import comfy.model_management

    dtype = control_dtype(control)
    context = inputs.get("crossattn_controlnet", inputs["c_crossattn"])
    extra = control.extra_args.copy()
    convert = _resolve("comfy.model_base", "convert_tensor")
    for name in control.extra_conds:
        if inputs.get(name) is not None:
            extra[name] = convert(inputs[name], dtype, x.device)
    timestep = model_sampling.timestep(t)
    x_in = model_sampling.calculate_input(t, x)
    out = control.control_model(x=x_in.to(dtype), hint=hint, timesteps=timestep.to(dtype),
                                context=comfy.model_management.cast_to_device(context, x.device, dtype), **extra)
    return control.control_merge(out, None, output_dtype=None)


def dynamic_vram(patcher) -> bool:
    """Whether ComfyUI loads ``patcher`` with Dynamic VRAM: core ``ModelPatcher.is_dynamic()`` (ComfyUI 0.16+,
    checked on 0.33.0: ``ModelPatcherDynamic`` answers True, plain ``ModelPatcher`` False; the VAE's and
    CLIP's patchers answer the same way). Hosts without the method (0.8.0, 0.3.75) never load dynamically."""
    is_dynamic = getattr(patcher, "is_dynamic", None)
    return bool(is_dynamic()) if callable(is_dynamic) else False


# ---- training ---------------------------------------------------------------------------------------------


def training_clone(patcher) -> tuple[object, str | None]:
    """``(clone, None)``: a clone to train on whose modules no other clone shares -- ``clone(force_deepcopy=True)``,
    what core's ``TrainLoraNode`` trains on (``comfy_extras/nodes_train.py``, checked on 0.33.0): a fresh model
    from the loader's ``cached_patcher_init``, with the patcher's patches, object patches and options copied.

    Hosts whose ``ModelPatcher.clone`` has no ``force_deepcopy`` (0.3.75, 0.8.0, where core's ``TrainLoraNode``
    trains on ``clone()``), or a model from a loader that sets no ``cached_patcher_init`` (core raises there):
    ``(clone(), report line)``, core's plain clone, which shares the module tree; ComfyUI then puts the clone's
    weight functions on the shared modules only while the clone is loaded."""
    if "force_deepcopy" not in _parameters(patcher.clone):
        why = "ModelPatcher.clone has no force_deepcopy (as on 0.3.75 and 0.8.0)"
    elif getattr(patcher, "cached_patcher_init", None) is None:
        why = "the model's loader set no cached_patcher_init (not one of core's loaders)"
    else:
        return patcher.clone(force_deepcopy=True), None
    return patcher.clone(), line("training_clone", why, "training on core's clone(), which shares the UNet's "
                                 "modules with the model while it is loaded, as core's TrainLoraNode does there")

