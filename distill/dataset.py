"""Encoded training set: latents, text contexts and SDXL's added conditions, held on the CPU (optionally cached).

Everything is encoded once before training (the VAE and text encoder are then not needed on the device). So a
random crop / flip is drawn once per image (seeded), not once per epoch. With ``cache_dir`` the encoded tensors
are stored as ``<fingerprint>.safetensors`` (data, resolution, crop options, family and encoder weights) and
reused by later runs.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from . import comfy_bridge
from .data import Sample, bounded_text, data_fingerprint, prepare_image
from .errors import DistillModelError
from .recipe import Schedule, ddim_sample

LOG = logging.getLogger(__name__)


@dataclass
class EncodedData:
    latents: torch.Tensor            # (N, 4, h, w) scaled
    context: torch.Tensor            # (N, 77, D)
    uncond_context: torch.Tensor     # (1, 77, D)
    y: torch.Tensor | None = None    # (N, adm) SDXL
    uncond_y: torch.Tensor | None = None
    fingerprint: str = ""
    mode: str = "images"

    def __len__(self) -> int:
        return self.latents.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"latents": self.latents, "context": self.context, "uncond_context": self.uncond_context}
        if self.y is not None:
            out |= {"y": self.y, "uncond_y": self.uncond_y}
        return out

    def cloned(self) -> EncodedData:
        """Copies made outside inference mode (ComfyUI encodes inside it; autograd cannot save those)."""
        with torch.inference_mode(False):
            fields = {k: v.detach().clone().float() for k, v in self.tensors().items()}
        return EncodedData(**fields, fingerprint=self.fingerprint, mode=self.mode)


def _weights_digest(*modules) -> str:
    """A digest of the first and last two parameters of each encoder (64 KiB of each).

    ``text_projection`` is left out: SD1.x/SD2.x checkpoints do not carry it, so ComfyUI leaves that layer of its
    CLIP uninitialised (``comfy/clip_model.py`` ``CLIPTextModel``; their conditioning never reads it), its bytes
    differed at every load and a cache made by one run never matched the next run's key.
    """
    digest = hashlib.sha256()
    for module in modules:
        params = [p for name, p in module.named_parameters() if not name.endswith("text_projection.weight")] \
            if module is not None else []
        for p in params[:2] + params[-2:]:
            digest.update(p.detach().float().cpu().numpy().tobytes()[:1 << 16])
    return digest.hexdigest()[:12]


def cache_key(samples: list[Sample], config, family: str, clip, vae) -> str:
    parts = [data_fingerprint(samples), str(config.resolution), str(config.center_crop), str(config.random_flip),
             str(config.seed), family, _weights_digest(getattr(clip, "cond_stage_model", None),
                                                       getattr(getattr(vae, "first_stage_model", None), "encoder",
                                                               None))]
    if all(s.image is None for s in samples):
        parts += [str(config.teacher_sampling_steps), str(config.teacher_guidance_scale)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def encode_dataset(samples: list[Sample], info: comfy_bridge.TeacherInfo, clip, vae, config, device,
                   runner_factory=None, cache_dir: str | Path | None = None) -> EncodedData:
    """Encode images + captions (or prompts → teacher latents); reads / writes the cache when given."""
    from ..lora.safe_write import atomic_save_safetensors

    key = cache_key(samples, config, info.family, clip, vae)
    cache = Path(cache_dir) / f"{key}.safetensors" if cache_dir else None
    mode = "images" if samples[0].image is not None else "prompts"
    if cache is not None and cache.is_file():
        cached = _read_cache(cache, len(samples), info.is_sdxl)
        if cached is not None:
            return EncodedData(**cached, fingerprint=data_fingerprint(samples), mode=mode)
    with torch.no_grad():  # nothing here is trained; ComfyUI's VAE/CLIP weights are inference tensors
        data = _encode(samples, info, clip, vae, config, runner_factory)
    data.fingerprint, data.mode = data_fingerprint(samples), mode
    if cache is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(data.tensors(), {"lcmpack.distill.cache": key}, cache_dir, cache.name)
    return data


def _read_cache(cache: Path, count: int, sdxl: bool) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None (the damaged file is removed and the data encoded again)."""
    from safetensors.torch import load_file

    wanted = {"latents", "context", "uncond_context"} | ({"y", "uncond_y"} if sdxl else set())
    try:
        tensors = load_file(str(cache))
        ok = set(tensors) == wanted and all(tensors[k].shape[0] == count for k in ("latents", "context"))
    except Exception as error:  # noqa: BLE001 - any safetensors/IO failure: the cache is rebuilt
        ok, tensors = False, type(error).__name__
    if ok:
        LOG.info("using cached encodings %s", cache.name)
        return tensors
    LOG.warning("encoded-data cache %s is damaged (%s); encoding the data again", cache.name,
                tensors if isinstance(tensors, str) else "wrong tensors")
    cache.unlink(missing_ok=True)
    return None


def _check_clip(info, context: torch.Tensor) -> None:
    expected = info.patcher.model.model_config.unet_config.get("context_dim")
    if expected and context.shape[-1] != expected:
        raise DistillModelError(f"the CLIP gives {context.shape[-1]}-wide text embeddings but this {info.family} "
                                f"model reads {expected}-wide ones; connect the CLIP of the same checkpoint.")


def _encode(samples, info, clip, vae, config, runner_factory) -> EncodedData:
    context, pooled = comfy_bridge.encode_texts(clip, [bounded_text(s.caption) for s in samples], info.is_sdxl)
    _check_clip(info, context)
    uncond_context, uncond_pooled = comfy_bridge.unconditional(clip, info.is_sdxl, context, pooled)
    size = config.resolution
    if samples[0].image is not None:
        generator = torch.Generator().manual_seed(config.seed)
        prepared = [prepare_image(s.image, size, config.center_crop, config.random_flip, generator, s.label)
                    for s in samples]
        latents = torch.cat([comfy_bridge.encode_latents(vae, info.patcher, p.pixels[None]) for p in prepared])
        sizes, crops = [p.original_size for p in prepared], [p.crop_top_left for p in prepared]
    else:
        sizes, crops = [(size, size)] * len(samples), [(0, 0)] * len(samples)
        latents = None
    y = uncond_y = None
    if info.is_sdxl:
        y = comfy_bridge.sdxl_adm(info.patcher, pooled, sizes, crops, size)
        uncond_y = comfy_bridge.sdxl_adm(info.patcher, uncond_pooled.expand(len(samples), -1), sizes, crops, size)
    data = EncodedData(latents=latents, context=context, uncond_context=uncond_context, y=y, uncond_y=uncond_y)
    if latents is None:
        data.latents = teacher_latents(data, info, config, runner_factory())
    return data


def teacher_latents(data: EncodedData, info, config, runner) -> torch.Tensor:
    """Prompts-only mode: x₀ of the teacher for each prompt (DDIM, ``teacher_sampling_steps``, CFG
    ``teacher_guidance_scale``), seeded per run; a data-free stand-in for real images (not in the paper)."""
    device = runner.device
    schedule = Schedule(info.alphas_cumprod, info.prediction).to(device)
    generator = torch.Generator().manual_seed(config.seed + 7919)
    shape = (4, config.resolution // 8, config.resolution // 8)
    out = []
    count = data.context.shape[0]
    for start in range(0, count, config.train_batch_size):
        stop = min(start + config.train_batch_size, count)
        n = stop - start
        noise = torch.randn((n, *shape), generator=generator).to(device)
        ctx = torch.cat([data.context[start:stop], data.uncond_context.expand(n, -1, -1)]).to(device)
        y = None if data.y is None else torch.cat([data.y[start:stop], data.uncond_y[start:stop]]).to(device)

        def teacher(x, t, ctx=ctx, y=y):
            out2 = runner(torch.cat([x, x]), torch.cat([t, t]), ctx, y)
            return out2.chunk(2)
        out.append(ddim_sample(teacher, noise, schedule, config.teacher_sampling_steps,
                               config.teacher_guidance_scale).float().cpu())
        LOG.info("teacher latents %d/%d", stop, count)
    return torch.cat(out)
