"""Quality numbers of the demo family: attribute accuracy and a Fréchet distance in the classifier's
feature space, per sampling configuration, through ComfyUI's own samplers and the pack's LCM path.

Generation mirrors the workflows: the teacher runs core ``comfy.sample.sample`` (DPM++ 2M / Karras or DDIM,
cfg 7.5, negative = the empty prompt); the LCM-LoRA runs what ``LCMPack_KSamplerLCM`` runs (the pack's LCM
model sampling, its LCM grid and its exact LCM loop, cfg 1). LoRAs are applied by the pack's loader
(``host.comfy_apply.apply_lora``). Conditioning is the stored ``CLIPTextEncode`` output of each caption
(``caption_embeddings.safetensors``), batched over prompts.

Fréchet distance (Heusel et al. 2017, arXiv 1706.08500) between Gaussians fitted to the classifier's
128-wide features of generated images and of real images of the same prompts:
``|mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g^1/2 S_r S_g^1/2)^1/2)``, computed in float64 with symmetric
eigendecompositions. Accuracy is "joint" under the stricter check (issue 26): shape, fill and background all
classified as the prompt says *and* the drawing well formed (:mod:`.shape_check`: the foreground fits the ideal
shape of its kind, IoU >= 0.85, in one fill colour); ``joint_classifier`` is the classifier's reading alone.
Style rate: the share classified as striped. Area: the mean share of the image the foreground covers.

The fine-tune rows (``ft_*``, issue 26) sample the fine-tuned teacher (:mod:`.finetune`), alone or with the
base LCM-LoRA unchanged; their Fréchet distance is against the fine-tune's own 25-step DPM++ images of the
same prompts drawn from other noise (``ft_25`` against that draw is the row set's floor).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from . import comfy_env, geometry, shape_check, world

LOG = logging.getLogger(__name__)
TEACHER_CFG = 7.5
LCM_CFG = 1.0


@dataclass(frozen=True)
class Config:
    """One row of the quality table."""

    name: str
    label: str
    steps: int
    lcm: bool = False
    style: bool = False
    finetune: bool = False
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"

    @property
    def cfg(self) -> float:
        return LCM_CFG if self.lcm else TEACHER_CFG


CONFIGS = (
    Config("teacher_50", "teacher, DPM++ 2M Karras, 50 steps, cfg 7.5", 50),
    Config("teacher_25", "teacher, DPM++ 2M Karras, 25 steps, cfg 7.5", 25),
    Config("teacher_4_dpmpp", "teacher, DPM++ 2M Karras, 4 steps, cfg 7.5", 4),
    Config("teacher_4_ddim", "teacher, DDIM (ddim_uniform), 4 steps, cfg 7.5", 4, sampler="ddim",
           scheduler="ddim_uniform"),
    Config("lcm_1", "LCM-LoRA, LCM, 1 step, cfg 1", 1, lcm=True),
    Config("lcm_2", "LCM-LoRA, LCM, 2 steps, cfg 1", 2, lcm=True),
    Config("lcm_4", "LCM-LoRA, LCM, 4 steps, cfg 1", 4, lcm=True),
    Config("lcm_8", "LCM-LoRA, LCM, 8 steps, cfg 1", 8, lcm=True),
    Config("lcm_style_4", "LCM-LoRA + style LoRA, LCM, 4 steps, cfg 1", 4, lcm=True, style=True),
    Config("teacher_style_25", "teacher + style LoRA, DPM++ 2M Karras, 25 steps, cfg 7.5", 25, style=True),
    Config("ft_25", "fine-tune (small shapes), DPM++ 2M Karras, 25 steps, cfg 7.5", 25, finetune=True),
    Config("ft_4_dpmpp", "fine-tune, DPM++ 2M Karras, 4 steps, cfg 7.5", 4, finetune=True),
    Config("ft_4_ddim", "fine-tune, DDIM (ddim_uniform), 4 steps, cfg 7.5", 4, finetune=True, sampler="ddim",
           scheduler="ddim_uniform"),
    Config("ft_lcm_2", "fine-tune + base LCM-LoRA, LCM, 2 steps, cfg 1", 2, lcm=True, finetune=True),
    Config("ft_lcm_4", "fine-tune + base LCM-LoRA, LCM, 4 steps, cfg 1", 4, lcm=True, finetune=True),
)
FINETUNE_REFERENCE_SEED_OFFSET = 1000


def conditioning(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[list, list]:
    """ComfyUI conditioning lists (positive, negative) for a batch of prompts: one tensor row per prompt."""
    positive = embeddings[world.caption_index(labels.cpu())]
    negative = embeddings[0:1].expand(len(labels), -1, -1)
    return [[positive, {}]], [[negative, {}]]


def lcm_sample(model, noise, latent, positive, negative, steps: int, seed: int) -> torch.Tensor:
    """What ``LCMPack_KSamplerLCM`` (sampler lcm, cfg 1, denoise 1) does with these inputs."""
    import comfy.sample
    import comfy.samplers
    from lcm_lora_pack.host.comfy_k_diffusion import sample_lcm_exact
    from lcm_lora_pack.host.comfy_model_sampling import lcm_schedule, reused_lcm_sampling

    model = reused_lcm_sampling(model, boundary=True)
    sigmas = lcm_schedule(model.get_model_object("model_sampling"), steps, 1.0)
    return comfy.sample.sample_custom(model, noise, LCM_CFG, comfy.samplers.KSAMPLER(sample_lcm_exact), sigmas,
                                      positive, [], latent, disable_pbar=True, seed=seed)


def generate(model, vae, embeddings, labels: torch.Tensor, config: Config, seed: int, control=None) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [0, 1] of ``labels`` under ``config`` (noise from ``seed`` as KSampler draws it);
    ``control`` = (a loaded ControlNet, its hint images ``[N, H, W, 3]``) applies it as ``ControlNetApplyAdvanced``
    does, strength 1."""
    import comfy.sample

    positive, negative = conditioning(embeddings, labels)
    if control is not None:
        from .controlnet import apply_control

        positive, negative = apply_control(positive, negative, *control)
    size = world.RESOLUTION // 8
    latent = torch.zeros(len(labels), 4, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    if config.lcm:
        samples = lcm_sample(model, noise, latent, positive, negative, config.steps, seed)
    else:
        samples = comfy.sample.sample(model, noise, config.steps, config.cfg, config.sampler, config.scheduler,
                                      positive, negative, latent, denoise=1.0, disable_pbar=True, seed=seed)
    images = vae.decode(samples)  # [N, H, W, 3] in [0, 1]
    return images.movedim(-1, 1).float().cpu().clamp(0, 1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` and ``b`` (float64)."""
    if min(len(a), len(b)) < 2:
        return float("nan")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle).item()


def load_models(unet_vae_path, lcm_lora_path, style_lora_path, finetune_path=None):
    """``{"teacher", "lcm", "style", "lcm_style", "finetune", "finetune_lcm"}`` ModelPatchers (those whose files
    are given) and the VAE, LoRAs applied by the pack's loader; the fine-tune gets the base LCM-LoRA unchanged."""
    comfy_env.prepare()
    import comfy.sd
    from lcm_lora_pack.host.comfy_apply import apply_lora
    from lcm_lora_pack.lora.io import read_lora_file

    teacher, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(unet_vae_path), output_vae=True, output_clip=False)
    models = {"teacher": teacher}
    if finetune_path:
        models["finetune"] = comfy.sd.load_checkpoint_guess_config(str(finetune_path), output_vae=False,
                                                                   output_clip=False)[0]
        if lcm_lora_path:
            models["finetune_lcm"] = apply_lora(models["finetune"], None, read_lora_file(lcm_lora_path)).model
    style = read_lora_file(style_lora_path) if style_lora_path else None
    if style is not None:
        models["style"] = apply_lora(teacher, None, style).model
    if lcm_lora_path:
        models["lcm"] = apply_lora(teacher, None, read_lora_file(lcm_lora_path)).model
        if style is not None:
            models["lcm_style"] = apply_lora(models["lcm"], None, style).model
    return models, vae


def model_for(models: dict, config: Config):
    if config.finetune:
        return models.get("finetune_lcm" if config.lcm else "finetune")
    key = ("lcm_style" if config.style else "lcm") if config.lcm else ("style" if config.style else "teacher")
    return models.get(key)


@torch.no_grad()
def classify(classifier, images: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted labels [N, 4], features [N, 128])`` on the classifier's device, returned on the CPU."""
    device = next(classifier.parameters()).device
    predicted, features = [], []
    for i in range(0, len(images), chunk):
        batch = images[i:i + chunk].to(device)
        predicted.append(classifier.predict(batch).cpu())
        features.append(classifier.features(batch).float().cpu())
    return torch.cat(predicted), torch.cat(features)


def strict_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, torch.Tensor, dict]:
    """``(accuracy report under the stricter check, features, summary: style rate and the shape check's
    well-formed share, median IoU and mean foreground area)``; the check runs on the classifier's device."""
    from .train import accuracy_report

    device = next(classifier.parameters()).device
    predicted, features = classify(classifier, images)
    images = images.to(device)
    report = shape_check.check(images, predicted)
    area = torch.cat([geometry.foreground_mask(images[i:i + 256]).float().mean((1, 2)).cpu()
                      for i in range(0, len(images), 256)])
    summary = {"style_rate": (predicted[:, 3] == 1).float().mean().item(), "well_formed": report.ok.float().mean().item(),
               "iou_median": report.iou.median().item(), "area": area.mean().item()}
    return accuracy_report(predicted, labels, report.ok), features, summary


def score(classifier, images: torch.Tensor, labels: torch.Tensor, real_features: torch.Tensor | None) -> dict:
    """A row's numbers: attribute accuracy against ``labels`` under the stricter check, Fréchet distance to
    ``real_features`` (if given), style rate, shape-check summary."""
    accuracy, features, summary = strict_accuracy(classifier, images, labels)
    row = {"accuracy": accuracy, **summary}
    if real_features is not None:
        row["frechet"] = frechet_distance(features, real_features)
    return row


@torch.no_grad()
def floor_rows(vae, classifier, labels: torch.Tensor, seed: int, real_features: torch.Tensor) -> dict:
    """Where a perfect generator's Fréchet distance would land, against the same real reference set:

    * ``real_redraw`` -- a second draw of real images of the same prompts (other jitter): the estimate's own
      floor at this many samples in a 128-wide feature space (the distance is biased upwards at finite N);
    * ``real_vae`` -- that second draw through the VAE round trip (encode, decode): the floor of any image this
      VAE decodes, which is what every sampled image is.
    """
    plain = labels.clone()
    plain[:, 3] = 0
    redraw = world.render(plain, torch.Generator().manual_seed(seed + 101))
    roundtrip = vae.decode(vae.encode(redraw.movedim(1, -1))).movedim(-1, 1).float().cpu().clamp(0, 1)
    rows = {}
    for name, label, images in (
            ("real_redraw", "real images of the same prompts, a second draw (the Fréchet floor at this N)", redraw),
            ("real_vae", "that second draw through the VAE round trip (the floor of decoded images)", roundtrip)):
        rows[name] = {"label": label, **score(classifier, images, plain, real_features)}
        LOG.info("%s: joint %.3f, Fréchet %.3f", name, rows[name]["accuracy"]["joint"], rows[name]["frechet"])
    return rows


def real_rows(classifier, labels: torch.Tensor, seed: int) -> tuple[dict, dict]:
    """Rows of real renders of ``labels`` (plain, striped, and the fine-tune's world :data:`world.SMALL`) under
    the stricter check, and the real reference features per style flag."""
    rows, real_features = {}, {}
    for name, flag, jitter in (("real", False, world.BASE), ("real_striped", True, world.BASE),
                               ("real_small", False, world.SMALL)):
        flagged = labels.clone()
        flagged[:, 3] = int(flag)
        images = world.render(flagged, torch.Generator().manual_seed(seed + 1 + int(flag) + 2 * (jitter != world.BASE)),
                              jitter=jitter)
        label = "real images of the same prompts" + (" (striped)" if flag else "") + (
            " (the fine-tune's world: small shapes)" if jitter != world.BASE else "")
        accuracy, features, summary = strict_accuracy(classifier, images, flagged)
        rows[name] = {"label": label, "accuracy": accuracy, **summary}
        if jitter == world.BASE:
            real_features[flag] = features
    return rows, real_features


def sample_rows(models, vae, embeddings, labels: torch.Tensor, config: Config, seed: int, chunk: int):
    """``(images, seconds)`` of one config on ``labels`` (style flag set per config), batched by ``chunk``."""
    prompt_labels = labels.clone()
    prompt_labels[:, 3] = int(config.style)
    start = time.perf_counter()
    images = torch.cat([generate(model_for(models, config), vae, embeddings, prompt_labels[i:i + chunk], config,
                                 seed + 17 + i) for i in range(0, len(labels), chunk)])
    return images, prompt_labels, time.perf_counter() - start


@torch.no_grad()
def evaluate(models, vae, embeddings, classifier, count: int, seed: int, configs=CONFIGS,
             chunk: int = 256) -> dict:
    """Every config on the same ``count`` prompts (plain or striped per config) and the same noise seeds; the
    fine-tune's rows against its own 25-step images from other noise (see the module doc)."""
    labels = world.random_labels(count, torch.Generator().manual_seed(seed), styled=False)
    rows, real_features = real_rows(classifier, labels, seed)
    results = {"count": count, "seed": seed, "rows": rows}
    rows.update(floor_rows(vae, classifier, labels, seed, real_features[False]))
    for config in configs:
        if model_for(models, config) is None:
            LOG.warning("skipping %s: its model or LoRA is missing", config.name)
            continue
        if config.finetune and "finetune" not in real_features:
            reference = next(c for c in CONFIGS if c.name == "ft_25")
            images, _, _ = sample_rows(models, vae, embeddings, labels, reference,
                                       seed + FINETUNE_REFERENCE_SEED_OFFSET, chunk)
            real_features["finetune"] = classify(classifier, images)[1]
        reference = real_features["finetune" if config.finetune else config.style]
        rows[config.name] = config_row(models, vae, embeddings, classifier, labels, config, seed, reference, chunk)
    return results


def config_row(models, vae, embeddings, classifier, labels: torch.Tensor, config: Config, seed: int,
               reference: torch.Tensor, chunk: int = 256) -> dict:
    """One row of the quality table: ``config`` sampled on ``labels`` (noise seeds from ``seed``), scored under the
    stricter check, Fréchet against ``reference`` features (also what ``scripts/demo_distill_sweep.py`` scores)."""
    images, prompt_labels, seconds = sample_rows(models, vae, embeddings, labels, config, seed, chunk)
    row = {"label": config.label, "steps": config.steps, "seconds": round(seconds, 2),
           **score(classifier, images, prompt_labels, reference)}
    LOG.info("%s: joint %.3f (classifier %.3f), Fréchet %.3f, style rate %.3f (%.1f s)", config.name,
             row["accuracy"]["joint"], row["accuracy"]["joint_classifier"], row["frechet"], row["style_rate"], seconds)
    return row
