"""Small, seeded models of the SD1.5 test family for the composition tests (issue 24): what users add to an
LCM-LoRA graph, built so that ComfyUI (and the third-party packs) detect them as real.

* ControlNet: ComfyUI's own ``comfy.cldm.cldm.ControlNet`` with the tiny SD1.5 UNet's config (one level,
  model_channels 320, context 768) and a 3-channel hint, saved in the original ``control_model.*`` layout
  (``load_controlnet_state_dict`` detects the config from those keys, as for ``control_v11p_sd15_*.pth``).
  Its zero convolutions are *not* zero (seeded like every other weight), so its residuals change the output.
* Inpainting checkpoint: the tiny SD1.5 checkpoint with a 9-channel ``input_blocks.0.0`` (latent + mask +
  masked latent), which ComfyUI detects as an inpainting model (``concat_keys``: ``InpaintModelConditioning``).

Every parameter is present and drawn from a generator seeded by (seed, name) (``models.seeded_state_dict``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models import SD15_UNET_CONFIG, _generator, seeded_state_dict

HINT_CHANNELS = 3


def build_sd15_controlnet_state_dict(seed: int, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    """A ControlNet of the tiny SD1.5 family (see module doc), keys under ``prefix``."""
    from .host import prepare_import

    prepare_import()
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    config = {k: v for k, v in SD15_UNET_CONFIG.items() if k not in ("out_channels",)}
    with torch.device("meta"):
        net = ControlNet(**config, hint_channels=HINT_CHANNELS, dtype=torch.float32, device="meta",
                         operations=comfy.ops.disable_weight_init)
    holder = torch.nn.Module()
    for name, tensor in net.state_dict().items():
        holder.register_buffer(name.replace(".", "__"), torch.empty(tensor.shape, dtype=tensor.dtype))
    seeded = seeded_state_dict(holder, seed)
    return {prefix + k.replace("__", "."): v for k, v in seeded.items()}


def write_sd15_controlnet(path: Path, seed: int = 10) -> Path:
    """A ControlNet file ``ControlNetLoader`` loads for the tiny SD1.5 checkpoint (``models/controlnet``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(build_sd15_controlnet_state_dict(seed), str(path))
    return path


def write_sd15_inpainting_checkpoint(path: Path, plain_checkpoint: Path, seed: int = 20) -> Path:
    """The tiny SD1.5 checkpoint with 9 UNet input channels, which ComfyUI detects as an inpainting model
    (``in_channels`` > 4 → ``concat_keys`` mask + masked image). Every other tensor is the plain checkpoint's,
    so the two differ only in the first convolution (its first 4 input channels are the plain one's too)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(plain_checkpoint))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    plain = sd[key]
    extra = torch.randn((plain.shape[0], 5, *plain.shape[2:]), generator=_generator(seed, key))
    sd[key] = torch.cat([plain, extra / (9 * plain.shape[2] * plain.shape[3]) ** 0.5], dim=1).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
