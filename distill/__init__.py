"""Latent consistency distillation of an LCM-LoRA from a ComfyUI model (LCM arXiv 2310.04378, LCM-LoRA 2311.05556).

* :mod:`.recipe` — the step's math (DDIM solver, boundary scalings, guidance, loss), pure torch;
* :mod:`.lora_layers` — trainable LoRA adapters hooked into the frozen UNet, kohya export;
* :mod:`.comfy_bridge`, :mod:`.dataset` — ComfyUI model/CLIP/VAE to the recipe's tensors;
* :mod:`.trainer`, :mod:`.api` — the loop (checkpoints, resume, DDP) and ``distill_lcm_lora(model, clip, …)``;
* :mod:`.cli` — ``python -m lcm_lora_pack.distill``.

Nothing here imports ComfyUI at import time.
"""
from __future__ import annotations


def distill_lcm_lora(*args, **kwargs):
    """See :func:`.api.distill_lcm_lora` (imported lazily)."""
    from .api import distill_lcm_lora as run

    return run(*args, **kwargs)
