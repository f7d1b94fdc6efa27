"""LoRA package of the pack: reading, format/family detection, coverage, mixing and export (pure torch).

Nothing here imports ComfyUI UI code; where ComfyUI's own key maps are needed they are passed in by the
nodes (see ``nodes/``), so the math stays testable against PEFT and diffusers. The two bridge modules
``comfy_apply`` (core key maps and adapters) and ``comfy_mixed_adapter`` (the mixed layers' weight adapter)
are the only ones that import ComfyUI.
"""
