"""LoRA package of the pack: reading, format/family detection, resolving, the one apply path, mixing and export.

Pure torch (no ComfyUI import): ``io`` (safe reading, cache), ``formats`` / ``detect`` (layouts, family, kind),
``resolve`` (modules onto a model's weight keys through core's key map, passed in), ``applied`` (the record and
the one "already applied" policy), ``mix`` / ``svd`` / ``batched`` / ``export`` (τ' = Σ λᵢ τᵢ, SVD, the merged
file), ``safe_write``, ``types``, ``errors``.

ComfyUI bridges, named ``comfy_*``: ``comfy_apply`` (the one apply path: checks, core's key maps and adapters,
``ModelPatcher.add_patches``, the report; it imports comfy only inside functions) and ``comfy_mixed_adapter``
(the mixed layers' ``comfy.weight_adapter`` class; imports comfy at import time, so only ``comfy_apply`` imports
it, lazily).
"""
