"""LoRA package of the pack: reading, format/family detection, resolving, the one apply path, mixing and export.

Pure torch (no ComfyUI import): ``io`` (safe reading, cache), ``formats`` / ``detect`` (layouts, family, kind),
``resolve`` (modules onto a model's weight keys through core's key map, passed in), ``applied`` (the record and
the one "already applied" policy), ``mix`` / ``svd`` / ``batched`` / ``export`` (τ' = Σ λᵢ τᵢ, SVD, the merged
file), ``safe_write``, ``types``, ``errors``.

Everything that speaks ComfyUI's objects (the apply path ``comfy_apply``, the mixed layers' adapter
``comfy_mixed_adapter``) lives in ``host/``, the one layer between this pure package and the nodes.
"""
