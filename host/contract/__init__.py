"""The pack's one contract with ComfyUI's internals: one function per contact, in one package.

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

from .base import CHECKED, LINE_PREFIX, MARKER, ContactMismatch, line
from .lora import (
    ADAPTER_CALCULATE_WEIGHT,
    AdapterCheck,
    core_lora_patches,
    lora_adapter_layout,
    lora_key_maps,
    lora_patches,
    weight_adapter_base,
)
from .memory import (
    free_device_memory,
    inference_reserve,
    loaded_model_ids,
    model_memory_required,
    on_model_unload,
    root_patcher,
    sampling_patchers,
)
from .models import (
    config_family,
    core_lcm_sampling,
    core_sampling_classes,
    dynamic_buffer_backups,
    model_file_name,
    object_patch,
    object_patch_original,
)
from .realtime import (
    CONTROL_PARTS,
    VAE_DECODE_PARTS,
    batch_transformer_options,
    batched_cond_inputs,
    cond_batch_fits,
    control_dtype,
    control_forward,
    control_hint,
    control_step_active,
    dynamic_vram,
    fast_control_mismatch,
    guider_mismatch,
    vae_decode_mismatch,
    wrapper_names,
)
from .sampling import (
    CORE_FIXED_SAMPLERS,
    PACK_FIXED_SAMPLERS,
    ancestral_runs_rf,
    ancestral_step,
    check_max_denoise_override,
    core_k_sampler,
    core_noise_sampler,
    fixed_sampler_kind,
    inpaint_noise,
    inpaint_scaling,
    lcm_sampler_kind,
    mark,
    preview_callback,
    progress_bar_enabled,
    require_core_k_sampler,
    sample_custom,
    sampler_base_model,
    sampler_max_denoise,
    torch_compile_wrapper,
    wrapped_sampler,
)
from .training import training_clone

__all__ = [
    "CHECKED", "ContactMismatch", "LINE_PREFIX", "MARKER", "line", "CORE_FIXED_SAMPLERS",
    "PACK_FIXED_SAMPLERS", "ancestral_runs_rf", "ancestral_step", "check_max_denoise_override", "core_k_sampler",
    "core_noise_sampler", "fixed_sampler_kind", "inpaint_noise", "inpaint_scaling", "lcm_sampler_kind", "mark",
    "preview_callback", "progress_bar_enabled", "require_core_k_sampler",
    "sample_custom", "sampler_base_model", "sampler_max_denoise", "torch_compile_wrapper", "wrapped_sampler",
    "config_family", "core_lcm_sampling", "core_sampling_classes", "model_file_name", "object_patch",
    "dynamic_buffer_backups", "object_patch_original",
    "ADAPTER_CALCULATE_WEIGHT", "AdapterCheck", "core_lora_patches", "lora_adapter_layout", "lora_key_maps",
    "lora_patches", "weight_adapter_base", "CONTROL_PARTS", "VAE_DECODE_PARTS", "batch_transformer_options",
    "batched_cond_inputs", "cond_batch_fits", "control_dtype", "control_forward", "control_hint",
    "control_step_active", "dynamic_vram", "fast_control_mismatch", "guider_mismatch",
    "vae_decode_mismatch", "wrapper_names", "training_clone", "free_device_memory", "inference_reserve",
    "loaded_model_ids", "model_memory_required", "on_model_unload", "root_patcher", "sampling_patchers",
]
