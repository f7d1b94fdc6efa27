"""The opt-in real-time path: VAE decode, wrappers, conds and batching, ControlNet, Dynamic VRAM.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring."""
from __future__ import annotations

import torch

from .base import ContactMismatch, _binds, _resolve, line

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


def batch_transformer_options(base_model, model_options: dict, order: list[int], uuids: list, timestep) -> dict:
    """The ``transformer_options`` core's private ``_calc_cond_batch`` (``comfy/samplers.py``) passes for one batched
    model call: ``model.current_patcher.apply_hooks(hooks=None)`` merged with the model options'
    ``transformer_options``, plus ``cond_or_uncond`` (``order``: 0 cond, 1 uncond, in batch order), ``uuids``,
    ``sigmas`` (the unbatched timestep); checked on 0.3.75, 0.8.0, 0.33.0. :class:`ContactMismatch` when the
    patcher has no ``apply_hooks``."""
    import comfy.patcher_extension as extensions

    apply_hooks = getattr(getattr(base_model, "current_patcher", None), "apply_hooks", None)
    if apply_hooks is None or not _binds(apply_hooks, hooks=None):
        raise ContactMismatch(line("batch_transformer_options", "BaseModel.current_patcher.apply_hooks(hooks=) is "
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
            raise ContactMismatch(line("batched_cond_inputs", "a conditioning's model_conds / process_cond(batch_size=, "
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
