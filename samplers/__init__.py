"""Pure LCM / TCD sampling math for the LCM-LoRA pack.

``timesteps`` (grid rule), ``boundary`` (c_skip / c_out) and ``lcm_sampler`` (LCM and TCD loops) import torch /
numpy only. ``comfy_model_sampling`` is the bridge that subclasses ComfyUI's ``comfy.model_sampling``
classes; ``comfy_cond_batch`` is the single-conditioning path for core's per-step conditioning batch (installed
through ComfyUI's ``sampler_calc_cond_batch_function`` hook); ``comfy_k_diffusion`` wraps the loops in the k-diffusion sampler contract on top of it;
``comfy_clone_cache`` keeps the patched model clone per input ModelPatcher (duck-typed, no ComfyUI import). They are
imported only by the nodes (and by tests that boot ComfyUI's modules).
"""
