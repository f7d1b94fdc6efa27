"""LCM / TCD sampling math for the LCM-LoRA pack.

Pure (torch / numpy, no ComfyUI import): ``timesteps`` (grid rule), ``boundary`` (c_skip / c_out), ``lcm_sampler``
(LCM and TCD loops), ``guidance`` (does the sampler need the negative?).

Everything that speaks ComfyUI's objects (model sampling, the k-diffusion sampler functions, presets, the
real-time path, the clone cache) lives in ``host/``, the one layer between this pure package and the nodes.
"""
