"""The demo ControlNet: the shape's mask as the control, trained on the teacher, shipped as a Control-LoRA.

Architecture: ComfyUI's own ``comfy.cldm.cldm.ControlNet`` with the demo UNet's config (one level,
``model_channels`` 320, context 768) and a 3-channel hint -- the trainable copy of the UNet's encoder
(``time_embed``, ``input_blocks``, ``middle_block``), the hint encoder ``input_hint_block`` and the zero
convolutions ``zero_convs`` / ``middle_block_out`` of Zhang et al. 2023 (arXiv 2302.05543), initialised as
diffusers' ``ControlNetModel.from_unet`` does: the encoder copied from the teacher, every zero convolution
and the hint encoder's last convolution at zero, so training starts from the teacher's own output.

Shipped format: core's Control-LoRA (``comfy.controlnet.ControlLora``, detected by the ``lora_controlnet``
key; Stability AI's format for SDXL, generic in core). Its encoder is the UNet it is applied to (core copies
the model's ``diffusion_model`` weights at sampling start) plus a low-rank delta ``up @ down`` per Linear and
Conv2d; the hint encoder and zero convolutions are stored in full. A full ControlNet of this UNet is 15.3 M
parameters (30.6 MB in fp16) -- twice the issue's 15 MB budget; the delta at rank :data:`RANK` keeps the file
small, and the encoder copy is trained as LoRA adapters on the frozen teacher weights (Hu et al. 2021, arXiv
2106.09685) -- what core rebuilds at load time.

Training objective: diffusers' ``examples/controlnet/train_controlnet.py`` -- the UNet frozen, its input
skip connections and middle block receiving the ControlNet's residuals, plain MSE between the predicted and
the true noise (eps-prediction), on SD1.5's schedule; 10 % of captions dropped to the empty one (its
``--proportion_empty_prompts``), as the teacher was trained, since the workflows' negative prompt carries the
control too (``ControlNetApplyAdvanced`` applies it to both).
"""
from __future__ import annotations

import torch
from torch import nn

from ..devkit.models import SD15_UNET_CONFIG
from . import comfy_env, nets, train, world

HINT_CHANNELS = 3
RANK = 64
BODY = ("time_embed.", "input_blocks.", "middle_block.")
NEW = ("input_hint_block.", "zero_convs.", "middle_block_out.")
FORMAT_KEY = "lora_controlnet"  # what comfy.controlnet.load_controlnet_state_dict looks for


def hint_images(coverage: torch.Tensor) -> torch.Tensor:
    """The control for shape coverage ``[N, H, W]`` in [0, 1]: white shape on black, ComfyUI ``IMAGE`` layout
    ``[N, H, W, 3]`` (what ``LoadImage`` gives for the mask PNG)."""
    return coverage.float()[..., None].expand(-1, -1, -1, 3).contiguous()


def build_controlnet(teacher: nn.Module, seed: int) -> nn.Module:
    """ComfyUI's ``ControlNet`` for the demo UNet, initialised as ``ControlNetModel.from_unet`` (module doc)."""
    comfy_env.prepare()
    from comfy.cldm.cldm import ControlNet

    torch.manual_seed(seed)
    config = {k: v for k, v in SD15_UNET_CONFIG.items() if k != "out_channels"}
    net = ControlNet(**config, hint_channels=HINT_CHANNELS, dtype=torch.float32, device="cpu",
                     operations=nets.train_ops())
    teacher_state = teacher.state_dict()
    copied = {k: teacher_state[k] for k in net.state_dict() if k.startswith(BODY)}
    missing = [k for k in net.state_dict() if k.startswith(BODY) and k not in teacher_state]
    if missing:
        raise ValueError(f"the teacher UNet lacks the ControlNet encoder weights {missing[:3]}: not the demo config")
    net.load_state_dict(copied, strict=False)
    last_hint = max(int(k.split(".")[1]) for k in net.state_dict() if k.startswith("input_hint_block."))
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("zero_convs.", "middle_block_out.", f"input_hint_block.{last_hint}.")):
                param.zero_()
    return net


def attach_adapters(net: nn.Module, rank: int = RANK) -> dict[str, nets.LoraAdapter]:
    """Freeze the encoder copy and hook a LoRA adapter (alpha = rank) on each of its Linear/Conv2d layers; the
    hint encoder and zero convolutions stay trainable in full."""
    targets = tuple(name for name, module in net.named_modules()
                    if name.startswith(BODY) and isinstance(module, (nn.Linear, nn.Conv2d)))
    adapters = nets.attach_lora(net, rank=rank, alpha=rank, targets=targets)
    for name, param in net.named_parameters():
        param.requires_grad_(name.startswith(NEW))
    return adapters


def control_lora_state_dict(net: nn.Module, adapters: dict[str, nets.LoraAdapter]) -> dict[str, torch.Tensor]:
    """The Control-LoRA file core reads (``ControlLora.pre_run``): ``<layer>.up`` / ``<layer>.down`` with
    ``weight + up.flatten(1) @ down.flatten(1)`` (the adapter's ``alpha / rank`` folded into ``up``), the new
    layers' ``.weight`` / ``.bias`` in full, and the ``lora_controlnet`` marker."""
    out = {FORMAT_KEY: torch.zeros(0)}
    for name, adapter in adapters.items():
        out[f"{name}.up"] = (adapter.up.weight.detach() * adapter.scale).float().cpu().contiguous()
        out[f"{name}.down"] = adapter.down.weight.detach().float().cpu().contiguous()
    for name, value in net.state_dict().items():
        if name.startswith(NEW):
            out[name] = value.detach().float().cpu().contiguous()
    return out


def controlnet_loss(unet, control, vae, embeddings, labels, images, coverage, alphas) -> torch.Tensor:
    """``train_controlnet.py``'s loss on one batch: MSE(eps(z_t, t, c, ControlNet(z_t, t, c, hint)), eps)."""
    count = images.shape[0]
    z0 = train.encode_latents(vae, images)
    t = torch.randint(0, alphas.shape[0], (count,), device=images.device)
    noise = torch.randn_like(z0)
    a = alphas[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    captions = world.caption_index(labels)
    captions = torch.where(torch.rand(count, device=images.device) < train.CAPTION_DROPOUT, 0, captions)
    context = embeddings[captions]
    hint = hint_images(coverage).movedim(-1, 1)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.device.type == "cuda"):
        residuals = control(x=zt, hint=hint, timesteps=t.float(), context=context)
        eps = unet(zt, t.float(), context=context, control=residuals)
    return nn.functional.mse_loss(eps.float(), noise)


def train_controlnet(stage: train.Stage, teacher, vae, embeddings, device, rank: int = RANK) -> tuple[dict, dict]:
    """Train on random scenes with their own masks as the control; returns (Control-LoRA tensors, report)."""
    teacher = teacher.to(device).eval().requires_grad_(False)
    net = build_controlnet(teacher, stage.seed).to(device)
    adapters = attach_adapters(net, rank)
    alphas = train.alphas_cumprod(device)
    params = [p for p in net.parameters() if p.requires_grad]
    params += [p for adapter in adapters.values() for p in adapter.parameters()]

    def step_fn(step):
        generator = torch.Generator().manual_seed(stage.seed * 1_000_003 + step)
        labels = world.random_labels(stage.batch, generator, styled=False)
        images, coverage = world.render_with_masks(labels, generator, device=device,
                                                   jitter=world.CONTROL_PLACEMENT)
        return controlnet_loss(teacher, net, vae, embeddings, labels.to(device), images, coverage, alphas)

    done = train._loop(stage, "controlnet", params, step_fn)
    trainable = sum(p.numel() for p in params)
    return control_lora_state_dict(net, adapters), {"steps": done, "rank": rank, "adapters": len(adapters),
                                                    "trainable_parameters": trainable}


def apply_control(positive: list, negative: list, control, image: torch.Tensor, strength: float = 1.0):
    """What core ``ControlNetApplyAdvanced.apply_controlnet`` returns for these inputs (nodes.py, ComfyUI 0.3.75,
    0.8.0, 0.33.0; no VAE, start 0, end 1, no previous ControlNet): one ``control.copy()`` with the hint set,
    shared by every positive and negative entry, ``control_apply_to_uncond`` False."""
    c_net = control.copy().set_cond_hint(image.movedim(-1, 1), strength, (0.0, 1.0))
    c_net.set_previous_controlnet(None)
    out = []
    for conditioning in (positive, negative):
        out.append([[t[0], {**t[1], "control": c_net, "control_apply_to_uncond": False}] for t in conditioning])
    return out[0], out[1]
