"""The host layer: the only package of the pack that speaks ComfyUI's objects.

Layers, importer above imported: ``nodes/`` (schemas, short ``execute``) → ``host/`` (this package) → the pure
math packages ``lora/`` and ``samplers/`` (torch only, no ComfyUI import, no import between the two). Every
module here but one is named ``comfy_*``; the one, ``contract``, is the only place that touches ComfyUI
internals (anything beyond ``comfy_api.latest`` and the documented node / patcher APIs): one function per
contact, resolved at use, with core's public path as fallback and one report line (see its docstring):

- ``comfy_apply`` (the one LoRA apply path: checks, core's key maps and adapters, ``add_patches``, the report),
  ``comfy_mixed_adapter`` (the mixed layers' ``comfy.weight_adapter`` class);
- ``comfy_model_sampling`` (LCM model sampling), ``comfy_k_diffusion`` (the k-diffusion sampler functions),
  ``comfy_presets`` (accelerator presets onto core samplers), ``comfy_finite`` (NaN/Inf explanations),
  ``comfy_clone_cache`` (the patched clone per input model);
- ``comfy_fast_path``, ``comfy_fast_vae``, ``comfy_cond_batch`` (the opt-in real-time path).

``distill/comfy_bridge.py`` stays beside the trainer it serves (the distillation package owns its model swap).
"""
