"""Pure LCM / TCD sampling math for the LCM-LoRA pack.

Modules here import torch only; ``comfy_model_sampling`` is the one bridge that subclasses ComfyUI's
``comfy.model_sampling`` classes and is imported only by the nodes.
"""
