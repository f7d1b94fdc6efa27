"""State shared by the benchmark sections: host, device, models per family (built once), report."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import synthetic
from .host import BenchHost

LOG = logging.getLogger(__name__)


@dataclass
class FamilyModels:
    """Random-weight models of one family; extra ComfyUI copies of the UNet are loaded on demand."""

    family: synthetic.Family
    unet: synthetic.UNetPair
    ldm_state_dict: dict
    clip: object = None
    vae: object = None
    diffusers_vae: object = None
    taesd: object = None

    def fresh_comfy_unet(self, dtype: torch.dtype | None = None):
        """An independent ComfyUI copy of the same UNet weights (so arms with different LoRA patches can
        stay loaded side by side instead of re-patching one model every round), in ``dtype`` (default: the
        family's)."""
        import comfy.sd

        return comfy.sd.load_diffusion_model_state_dict(dict(self.ldm_state_dict),
                                                        model_options={"dtype": dtype or self.unet_dtype})

    @property
    def unet_dtype(self):
        return next(self.unet.diffusers.parameters()).dtype


@dataclass
class BenchContext:
    host: BenchHost
    device: str
    dtype: torch.dtype
    repeats: int
    warmup: int
    out_dir: Path
    smoke: bool
    e2e_batch: int = 1  # images per graph in the e2e sections
    sections: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    _models: dict = field(default_factory=dict)

    @property
    def short_repeats(self) -> int:
        """Repeats for the slow arms (seconds per call): half, at least 3 (1 in the smoke run)."""
        return self.repeats if self.smoke else max(3, self.repeats // 2)

    def models(self, family_name: str, with_clip_vae: bool = False) -> FamilyModels:
        """Build (once) the family's UNet pair; the text encoders and VAE only when asked."""
        family = synthetic.FAMILIES[family_name]
        if family_name not in self._models:
            start = time.perf_counter()
            pair = synthetic.build_unet(family, self.device, self.dtype)
            ldm = {k: v.detach().clone() for k, v in pair.comfy.model.diffusion_model.state_dict().items()}
            self._models[family_name] = FamilyModels(family, pair, ldm)
            LOG.info("built %s UNet (%.0f M params) in %.1f s", family_name, pair.parameters / 1e6,
                     time.perf_counter() - start)
        models = self._models[family_name]
        if with_clip_vae and models.clip is None:
            start = time.perf_counter()
            models.clip = synthetic.build_clip(family, self.device)
            models.diffusers_vae, models.vae = synthetic.build_vae(self.device, self.dtype)
            LOG.info("built %s CLIP + VAE in %.1f s", family_name, time.perf_counter() - start)
        return models

    def drop_models(self, family_name: str) -> None:
        import comfy.model_management

        self._models.pop(family_name, None)
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def report(self, section: str, markdown: str, data: dict | None = None) -> None:
        """Add a table to the report (printed at the end, written to ``out_dir``)."""
        self.sections.append(markdown)
        self.records.append({"section": section, **(data or {})})
        print(markdown, flush=True)

    def write(self, header: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "bench_report.md"
        path.write_text(header + "\n" + "\n".join(self.sections))
        (self.out_dir / "bench_records.json").write_text(json.dumps(self.records, indent=1, default=str))
        return path
