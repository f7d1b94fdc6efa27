"""All knobs of the trainer, with the reference scripts' defaults, and their validation.

Defaults are those of diffusers' ``train_lcm_distill_lora_sd_wds.py`` (SD1.x/SD2.x) and
``train_lcm_distill_lora_sdxl_wds.py`` (SDXL family), except ``loss_type``: the scripts' argparse default is
``l2`` but the LCM-LoRA command in their README (and the published LCM-LoRAs) use ``huber``, which is ours.
``w_min`` depends on the family (5 for SD1.x/SD2.x, 3 for SDXL) when not given.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from .errors import DistillConfigError
from .lora_layers import DEFAULT_TARGETS
from .recipe import LOSS_TYPES, RecipeConfig

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
SAVE_DTYPES = ("fp16", "bf16", "fp32")
SDXL_FAMILIES = ("sdxl", "ssd-1b", "vega")
NUMERIC_FIELDS = ("resolution", "train_batch_size", "max_train_steps", "learning_rate", "lr_warmup_steps", "lora_rank",
                  "lora_alpha", "lora_dropout", "w_min", "w_max", "num_ddim_timesteps", "huber_c",
                  "timestep_scaling_factor", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
                  "max_grad_norm", "seed", "checkpointing_steps", "checkpoints_total_limit",
                  "teacher_sampling_steps", "teacher_guidance_scale", "validation_draws")
# The recipe's own values: part of the checkpoint fingerprint (a resume must not change them).
RECIPE_KEYS = ("resolution", "train_batch_size", "learning_rate", "lora_rank", "lora_alpha", "lora_dropout",
               "lora_target_modules", "w_min", "w_max", "num_ddim_timesteps", "loss_type", "huber_c",
               "timestep_scaling_factor", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
               "max_grad_norm", "lr_scheduler", "lr_warmup_steps", "seed", "center_crop", "random_flip",
               "world_size")


@dataclass
class DistillConfig:
    """Hyper-parameters; names equal diffusers' script options."""

    resolution: int = 512
    train_batch_size: int = 16          # per process
    max_train_steps: int = 1000
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 500
    lora_rank: int = 64
    lora_alpha: float = 64.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = DEFAULT_TARGETS
    w_min: float | None = None          # None: 5.0 (SD1.x/SD2.x) or 3.0 (SDXL family)
    w_max: float = 15.0
    num_ddim_timesteps: int = 50
    loss_type: str = "huber"
    huber_c: float = 0.001
    timestep_scaling_factor: float = 10.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    center_crop: bool = False
    random_flip: bool = False
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    save_dtype: str = "fp16"
    # prompts-only mode: the teacher's own x0 (DDIM, classifier-free guidance)
    teacher_sampling_steps: int = 25
    teacher_guidance_scale: float = 7.5
    validation_draws: int = 0           # > 0: fixed-batch validation loss before and after training
    world_size: int = field(default=1, repr=False)

    def resolved(self, family: str) -> DistillConfig:
        """A copy with the family-dependent defaults filled in, validated."""
        values = asdict(self)
        if values["w_min"] is None:
            values["w_min"] = 3.0 if family in SDXL_FAMILIES else 5.0
        values["lora_target_modules"] = tuple(values["lora_target_modules"])
        config = DistillConfig(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Every option in its range, every float finite (NaN/Inf fail here, naming the option, before any work)."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or value is None or item.name == "lora_target_modules":
                continue
            if not isinstance(value, (int, float)):
                if item.name in NUMERIC_FIELDS:
                    raise DistillConfigError(f"{item.name}={value!r} is not a number; give a number.")
                continue
            if not math.isfinite(value):
                raise DistillConfigError(f"{item.name}={value!r} is not a finite number; give a finite value "
                                         f"(default {getattr(DistillConfig, item.name, None)!r}).")
        checks = [
            (self.resolution >= 64 and self.resolution % 8 == 0, "resolution", "a multiple of 8, at least 64"),
            (self.train_batch_size >= 1, "train_batch_size", "at least 1"),
            (self.max_train_steps >= 1, "max_train_steps", "at least 1"),
            (0 < self.learning_rate < 1, "learning_rate", "in (0, 1), e.g. 1e-4"),
            (self.lr_scheduler in LR_SCHEDULERS, "lr_scheduler", f"one of {LR_SCHEDULERS}"),
            (self.lr_warmup_steps >= 0, "lr_warmup_steps", "≥ 0"),
            (1 <= self.lora_rank <= 1024, "lora_rank", "in 1 … 1024"),
            (0 < self.lora_alpha <= 65536, "lora_alpha", "in (0, 65536]"),
            (self.lora_dropout == 0, "lora_dropout", "0: the LoRA is a ComfyUI weight function (W + (α/r)·B·A), "
             "which has no form of PEFT's dropout on the LoRA input"),
            (len(self.lora_target_modules) > 0, "lora_target_modules", "a non-empty list of module names"),
            (self.w_min is None or 0 <= self.w_min <= self.w_max, "w_min", "≥ 0 and ≤ w_max"),
            (0 <= self.w_max <= 100, "w_max", "in [0, 100]"),
            (2 <= self.num_ddim_timesteps <= 1000 and 1000 % self.num_ddim_timesteps == 0, "num_ddim_timesteps",
             "a divisor of 1000 between 2 and 1000 (e.g. 50)"),
            (self.loss_type in LOSS_TYPES, "loss_type", f"one of {LOSS_TYPES}"),
            (0 < self.huber_c <= 10, "huber_c", "in (0, 10] (LCM-LoRA: 0.001)"),
            (0 < self.timestep_scaling_factor <= 1000, "timestep_scaling_factor", "in (0, 1000] (default 10)"),
            (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam_beta1/adam_beta2", "in [0, 1)"),
            (0 <= self.adam_weight_decay <= 1, "adam_weight_decay", "in [0, 1] (default 0.01)"),
            (0 < self.adam_epsilon <= 1, "adam_epsilon", "in (0, 1] (default 1e-8)"),
            (self.max_grad_norm > 0, "max_grad_norm", "> 0"),
            (self.mixed_precision in MIXED_PRECISION, "mixed_precision", f"one of {MIXED_PRECISION}"),
            (self.checkpointing_steps >= 1, "checkpointing_steps", "at least 1"),
            (self.checkpoints_total_limit is None or self.checkpoints_total_limit >= 1, "checkpoints_total_limit",
             "at least 1 (or unset)"),
            (self.save_dtype in SAVE_DTYPES, "save_dtype", f"one of {SAVE_DTYPES}"),
            (1 <= self.teacher_sampling_steps <= 1000, "teacher_sampling_steps", "in 1 … 1000"),
            (0 <= self.teacher_guidance_scale <= 100, "teacher_guidance_scale", "in [0, 100]"),
            (0 <= self.validation_draws <= 1000, "validation_draws", "in 0 … 1000"),
        ]
        for ok, name, wanted in checks:
            if not ok:
                value = ", ".join(f"{n}={getattr(self, n)!r}" for n in name.split("/"))
                raise DistillConfigError(f"{value} is out of range: must be {wanted}.")

    def recipe(self) -> RecipeConfig:
        return RecipeConfig(num_ddim_timesteps=self.num_ddim_timesteps, loss_type=self.loss_type,
                            huber_c=self.huber_c, timestep_scaling=self.timestep_scaling_factor)

    def recipe_values(self) -> dict:
        values = asdict(self)
        values["lora_target_modules"] = list(values["lora_target_modules"])
        return {k: values[k] for k in RECIPE_KEYS}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe_values(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
