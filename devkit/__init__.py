"""Developer kit: what the tests, the scripts and the benchmark share (never imported by the nodes).

* :mod:`.host` -- boots real ComfyUI in this process with the pack registered (CPU or CUDA) and runs prompts;
* :mod:`.models`, :mod:`.tiny_sdxl` -- small seeded SD1.5/SDXL-family models ComfyUI detects as real;
* :mod:`.loras` -- LoRA files in the published formats for those models;
* :mod:`.workflows`, :mod:`.workflow_specs` -- the example workflows as test and demo material;
* :mod:`.testkit` -- a test-only ComfyUI custom-node folder (linked next to the pack when needed).

Imported as ``lcm_lora_pack.devkit`` (tests, scripts, bench). Its modules import ComfyUI only inside functions,
after :func:`.host.prepare_import` has put ComfyUI's root on ``sys.path``.
"""
