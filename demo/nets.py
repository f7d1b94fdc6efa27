"""The demo's networks: ComfyUI's own TAESD and one-level SD1.5 UNet classes (so the trained state dicts are
exactly what ``CheckpointLoaderSimple`` reads), the attribute classifier, and LoRA layers for the style.

ComfyUI builds its models with ``comfy.ops.disable_weight_init`` (no initialisation: weights come from a
file). For training, :class:`TrainOps` restores torch's default initialisation, so ``zero_module`` in the
UNet keeps its zero-initialised output layers as in the LDM reference.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..devkit.models import SD15_UNET_CONFIG
from . import comfy_env, world

# A one-level SD1.5-family UNet (ComfyUI detects SD1.5 from model_channels 320, context_dim 768 and the
# conv transformer projections; depth is not checked). 25.8 M parameters: the tests' config, devkit/models.py.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_LATENT_SCALE = 0.18215  # comfy.latent_formats.SD15.scale_factor
CLASSIFIER_RESOLUTION = 64
FEATURE_WIDTH = 128


def train_ops():
    """``comfy.ops.disable_weight_init`` with torch's default initialisation back (for training)."""
    comfy_env.prepare()
    import comfy.ops

    base = comfy.ops.disable_weight_init

    class TrainOps(base):
        class Linear(base.Linear):
            def reset_parameters(self):
                return nn.Linear.reset_parameters(self)

        class Conv2d(base.Conv2d):
            def reset_parameters(self):
                return nn.Conv2d.reset_parameters(self)

        class GroupNorm(base.GroupNorm):
            def reset_parameters(self):
                return nn.GroupNorm.reset_parameters(self)

        class LayerNorm(base.LayerNorm):
            def reset_parameters(self):
                return nn.LayerNorm.reset_parameters(self)

    return TrainOps


def build_unet(seed: int) -> nn.Module:
    """ComfyUI's ``UNetModel`` for :data:`SD15_UNET_CONFIG`, initialised from ``seed`` (float32, CPU)."""
    comfy_env.prepare()
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    torch.manual_seed(seed)
    return UNetModel(**SD15_UNET_CONFIG, dtype=torch.float32, device="cpu", operations=train_ops())


def build_taesd(seed: int) -> nn.Module:
    """ComfyUI's ``TAESD`` (4 latent channels) with torch's default initialisation from ``seed``."""
    comfy_env.prepare()
    from comfy.taesd.taesd import TAESD

    torch.manual_seed(seed)
    vae = TAESD(latent_channels=4)
    for module in vae.modules():
        if isinstance(module, nn.Conv2d):
            nn.Conv2d.reset_parameters(module)
    return vae


def set_latent_normalisation(vae: nn.Module, mean: float, std: float) -> None:
    """Make ComfyUI's model input ``SD15.process_in(VAE latent) = (raw - mean) / std`` (unit scale).

    ComfyUI: latent = raw / vae_scale + vae_shift, model input = 0.18215 * latent; decoding inverts it.
    """
    with torch.no_grad():
        vae.vae_scale.fill_(std * SD15_LATENT_SCALE)
        vae.vae_shift.fill_(-mean / (std * SD15_LATENT_SCALE))


class AttributeClassifier(nn.Module):
    """Small CNN on 64 x 64 images: a 128-wide feature (used for the Fréchet distance) and one head per
    attribute of :mod:`.world` (shape, fill, background, style)."""

    def __init__(self) -> None:
        super().__init__()
        layers, width = [], 3
        for out in (32, 64, 128, FEATURE_WIDTH):
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(),
                       nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(8, out), nn.SiLU(), nn.AvgPool2d(2)]
            width = out
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(FEATURE_WIDTH, size) for name, size in world.ATTRIBUTE_SIZES.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 128]`` features of images in [0, 1] at any resolution (resized to 64 x 64)."""
        if images.shape[-1] != CLASSIFIER_RESOLUTION:
            images = nn.functional.interpolate(images, size=CLASSIFIER_RESOLUTION, mode="area")
        return self.body(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.features(images)
        return {name: head(feature) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 4]`` predicted labels in :data:`world.ATTRIBUTES` order."""
        logits = self(images)
        return torch.stack([logits[name].argmax(1) for name in world.ATTRIBUTES], dim=1)


class LoraAdapter(nn.Module):
    """``W x + (alpha / rank) * up(down(x))`` beside a frozen Linear or Conv2d (Hu et al. 2021, arXiv
    2106.09685): ``down`` has the layer's kernel, stride and padding, ``up`` is 1 x 1 and starts at zero."""

    def __init__(self, layer: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank
        if isinstance(layer, nn.Conv2d):
            self.down = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, bias=False)
            self.up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.down = nn.Linear(layer.in_features, rank, bias=False)
            self.up = nn.Linear(rank, layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def hook(self, module, inputs, output):
        return output + self.scale * self.up(self.down(inputs[0].to(self.down.weight.dtype))).to(output.dtype)


STYLE_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                      "in_layers.2", "out_layers.3", "emb_layers.1", "skip_connection", "input_blocks.0.0",
                      "out.2")


def attach_lora(unet: nn.Module, rank: int, alpha: float, targets=STYLE_LORA_TARGETS) -> dict[str, LoraAdapter]:
    """Freeze ``unet`` and hook a :class:`LoraAdapter` onto every Linear/Conv2d whose name ends in a target."""
    unet.requires_grad_(False)
    adapters = {}
    for name, module in unet.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and name.endswith(targets):
            adapter = LoraAdapter(module, rank, alpha).to(module.weight.device)
            module.register_forward_hook(adapter.hook)
            adapters[name] = adapter
    return adapters


def kohya_lora_state_dict(adapters: dict[str, LoraAdapter], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """Adapters as a kohya-format LoRA (``lora_unet_<ldm name with _>.lora_down/lora_up.weight``, ``.alpha``),
    the spelling ComfyUI's ``LoraLoader`` and the pack's loader read."""
    out = {}
    for name, adapter in adapters.items():
        key = "lora_unet_" + name.replace(".", "_")
        down, up = adapter.down.weight.detach(), adapter.up.weight.detach()
        out[f"{key}.lora_down.weight"] = down.float().cpu().contiguous()
        out[f"{key}.lora_up.weight"] = up.float().cpu().contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out
