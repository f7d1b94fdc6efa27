"""Training loops of the demo family: autoencoder, teacher UNet, style LoRA, attribute classifier.

All batches come from :mod:`.world` with seeds derived from the stage's seed and the step, so a run is
fixed by its seeds (up to GPU non-determinism). Mixed precision: bf16 autocast, float32 master weights.

* VAE: TAESD encoder/decoder trained as a plain autoencoder (MSE + L1 on pixels), latent noise N(0, 0.1)
  injected before decoding so that the decoder tolerates imperfect diffusion outputs, a small L2 pull on the
  latents. Latent mean/std are then folded into ``vae_scale``/``vae_shift`` (:func:`nets.set_latent_normalisation`).
* Teacher: DDPM eps-prediction (Ho et al. 2020, arXiv 2006.11239) on SD1.5's schedule (ComfyUI
  ``make_beta_schedule("linear", 1000, 0.00085, 0.012)``), min-SNR-5 loss weighting (Hang et al. 2023,
  arXiv 2303.09556: weight min(SNR, 5) / SNR for eps), 10 % caption dropout to the empty caption for
  classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598), EMA of the weights.
* Fine-tune (issue 26): the teacher's objective, every UNet weight trained, from the teacher's weights, on a
  shifted world (:data:`world.SMALL`: smaller shapes anywhere) -- a fine-tuned model the LCM-LoRA never saw.
* Style LoRA: the same objective on striped scenes (captions with the trigger phrase), base frozen.
* Classifier: cross-entropy per attribute on real scenes, half of each batch passed through the trained
  autoencoder (what generated images look like), plus light pixel noise.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from . import nets, world

LOG = logging.getLogger(__name__)
CAPTION_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0


@dataclass
class Stage:
    steps: int
    batch: int
    lr: float
    seed: int
    max_seconds: float = 1e9
    warmup: int = 100
    eval_count: int = 2048


def alphas_cumprod(device) -> torch.Tensor:
    """SD1.5's training schedule as ComfyUI builds it (``ModelSamplingDiscrete``, "linear" = scaled linear)."""
    from comfy.ldm.modules.diffusionmodules.util import make_beta_schedule

    betas = torch.as_tensor(make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.012))
    return torch.cumprod(1 - betas, 0).to(device=device, dtype=torch.float32)


def _lr_factor(step: int, stage: Stage) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < stage.warmup:
        return (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _loop(stage: Stage, name: str, params, step_fn) -> int:
    """Run ``step_fn(step) -> loss`` with AdamW and the schedule; stops early at ``max_seconds``."""
    optimiser = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)
    start, running = time.perf_counter(), None
    step = 0
    for step in range(stage.steps):
        for group in optimiser.param_groups:
            group["lr"] = stage.lr * _lr_factor(step, stage)
        loss = step_fn(step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        value = loss.item() if step % 50 == 0 or step == stage.steps - 1 else None
        if value is not None:
            running = value if running is None else 0.8 * running + 0.2 * value
            if step % 500 == 0 or step == stage.steps - 1:
                LOG.info("%s step %d/%d loss %.5f (%.1f s)", name, step, stage.steps, running,
                         time.perf_counter() - start)
        if time.perf_counter() - start > stage.max_seconds:
            LOG.warning("%s stopped at step %d of %d: time budget %.0f s", name, step + 1, stage.steps,
                        stage.max_seconds)
            break
    return step + 1


def _batch(stage: Stage, step: int, device, styled, jitter: world.Jitter = world.BASE):
    return world.sample(stage.batch, stage.seed * 1_000_003 + step, styled=styled, device=device, jitter=jitter)


def train_vae(stage: Stage, device) -> tuple[nn.Module, dict]:
    vae = nets.build_taesd(stage.seed).to(device)
    vae.vae_scale.requires_grad_(False)
    vae.vae_shift.requires_grad_(False)

    def step_fn(step):
        images, _ = _batch(stage, step, device, 0.5)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            raw = vae.taesd_encoder(images)
            recon = vae.taesd_decoder(raw + 0.1 * torch.randn_like(raw))
        recon, raw = recon.float(), raw.float()
        return (nn.functional.mse_loss(recon, images) + 0.2 * (recon - images).abs().mean()
                + 1e-3 * raw.pow(2).mean())

    done = _loop(stage, "vae", [p for p in vae.parameters() if p.requires_grad], step_fn)
    vae.eval()
    with torch.no_grad():
        images, _ = world.sample(min(512, stage.eval_count), stage.seed + 7, styled=0.5, device=device)
        raw = vae.taesd_encoder(images)
        mean, std = raw.mean().item(), raw.std().item()
        recon = vae.taesd_decoder(raw).clamp(0, 1)
        psnr = (-10 * torch.log10(nn.functional.mse_loss(recon, images))).item()
    nets.set_latent_normalisation(vae, mean, std)
    return vae, {"steps": done, "latent_mean": mean, "latent_std": std, "psnr_db": psnr}


@torch.no_grad()
def encode_latents(vae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Model-space latents (what ComfyUI's SD1.5 UNet sees after ``process_in``) of images in [0, 1]."""
    latent = vae.taesd_encoder(images) / vae.vae_scale + vae.vae_shift
    return latent * nets.SD15_LATENT_SCALE


@torch.no_grad()
def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    latent = latents / nets.SD15_LATENT_SCALE
    return vae.taesd_decoder((latent - vae.vae_shift) * vae.vae_scale).clamp(0, 1)


def diffusion_loss(unet, vae, embeddings, labels, images, alphas) -> torch.Tensor:
    """Min-SNR-weighted eps-prediction loss with caption dropout, one batch."""
    count = images.shape[0]
    z0 = encode_latents(vae, images)
    t = torch.randint(0, alphas.shape[0], (count,), device=images.device)
    noise = torch.randn_like(z0)
    a = alphas[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    captions = world.caption_index(labels)
    captions = torch.where(torch.rand(count, device=images.device) < CAPTION_DROPOUT, 0, captions)
    context = embeddings[captions]
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=images.device.type == "cuda"):
        eps = unet(zt, t.float(), context=context)
    snr = (a / (1 - a)).view(-1)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
    per_sample = (eps.float() - noise).pow(2).mean(dim=(1, 2, 3))
    return (weight * per_sample).mean()


def train_teacher(stage: Stage, vae, embeddings, device, ema_decay: float = 0.999, init: nn.Module | None = None,
                  jitter: world.Jitter = world.BASE) -> tuple[nn.Module, dict]:
    """The teacher from scratch (seeded initialisation), or, with ``init``, a full fine-tune of a copy of that
    UNet (all weights trained; EMA from its weights) on the world of ``jitter``."""
    unet = (copy.deepcopy(init).requires_grad_(True).train() if init is not None
            else nets.build_unet(stage.seed)).to(device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    alphas = alphas_cumprod(device)
    params = [p for p in unet.parameters()]
    ema_params = [p for p in ema.parameters()]

    def step_fn(step):
        if step > 0:  # EMA of the weights after the previous update
            decay = min(ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1 - decay)
        images, labels = _batch(stage, step, device, False, jitter)
        return diffusion_loss(unet, vae, embeddings, labels, images, alphas)

    done = _loop(stage, "teacher" if init is None else "fine-tune", params, step_fn)
    return ema.eval(), {"steps": done}


def train_style_lora(stage: Stage, teacher, vae, embeddings, device, rank: int = 8) -> tuple[dict, dict]:
    unet = copy.deepcopy(teacher)
    adapters = nets.attach_lora(unet, rank=rank, alpha=rank)
    alphas = alphas_cumprod(device)
    params = [p for adapter in adapters.values() for p in adapter.parameters()]

    def step_fn(step):
        images, labels = _batch(stage, step, device, True)
        return diffusion_loss(unet, vae, embeddings, labels, images, alphas)

    done = _loop(stage, "style-lora", params, step_fn)
    return nets.kohya_lora_state_dict(adapters, rank, rank), {"steps": done, "rank": rank, "modules": len(adapters)}


def train_classifier(stage: Stage, vae, device) -> tuple[nn.Module, dict]:
    torch.manual_seed(stage.seed)
    classifier = nets.AttributeClassifier().to(device)

    def step_fn(step):
        images, labels = _batch(stage, step, device, 0.5)
        half = images.shape[0] // 2
        with torch.no_grad():
            images[:half] = decode_latents(vae, encode_latents(vae, images[:half]))
            images = images + 0.02 * torch.rand(images.shape[0], 1, 1, 1, device=device) * torch.randn_like(images)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = classifier(images)
        return sum(nn.functional.cross_entropy(logits[name].float(), labels[:, i])
                   for i, name in enumerate(world.ATTRIBUTES))

    done = _loop(stage, "classifier", list(classifier.parameters()), step_fn)
    classifier.eval()
    report = {"steps": done}
    with torch.no_grad():
        images, labels = world.sample(stage.eval_count, stage.seed + 99991, styled=0.5, device=device)
        report["heldout_real"] = accuracy_report(classifier.predict(images), labels)
        roundtrip = decode_latents(vae, encode_latents(vae, images))
        report["heldout_vae_roundtrip"] = accuracy_report(classifier.predict(roundtrip), labels)
    return classifier, report


def accuracy_report(predicted: torch.Tensor, labels: torch.Tensor, well_formed: torch.Tensor | None = None) -> dict:
    """Per-attribute accuracy, joint accuracy over shape+fill+background, and the style accuracy. With
    ``well_formed`` (``[N]`` bool, :mod:`.shape_check`) the joint numbers also require a well-formed drawing
    (the stricter check) and ``joint_classifier`` keeps the classifier's reading alone."""
    correct = predicted == labels
    out = {name: correct[:, i].float().mean().item() for i, name in enumerate(world.ATTRIBUTES)}
    joint, joint_style = correct[:, :3].all(1), correct.all(1)
    if well_formed is not None:
        out["joint_classifier"] = joint.float().mean().item()
        joint, joint_style = joint & well_formed, joint_style & well_formed
    out["joint"] = joint.float().mean().item()
    out["joint_with_style"] = joint_style.float().mean().item()
    return out
