"""LCM / TCD sampling math for the LCM-LoRA pack.

Pure (torch / numpy, no ComfyUI import): ``timesteps`` (grid rule), ``boundary`` (c_skip / c_out), ``lcm_sampler``
(LCM and TCD loops), ``guidance`` (does the sampler need the negative?).

ComfyUI bridges, named ``comfy_*``: ``comfy_model_sampling`` (subclasses ``comfy.model_sampling``; imports comfy)
and ``comfy_cond_batch`` (which steps the opt-in fast path may run as one direct model call; imports comfy) import ComfyUI; ``comfy_k_diffusion`` (the loops in the k-diffusion sampler contract) imports it
through ``comfy_model_sampling``; ``comfy_clone_cache`` (the patched clone per input ModelPatcher) is duck-typed
and imports nothing of ComfyUI, but speaks its objects. They are imported only by the nodes (and by tests that
boot ComfyUI's modules).
"""
