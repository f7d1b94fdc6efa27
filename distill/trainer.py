"""The training loop: LCD steps on a ComfyUI model + CLIP (+ VAE), LoRA out through the pack's safe writer.

Data parallel (``torchrun``): every process holds the model and the encoded data; step s draws the *global*
batch (sample order, grid index, noise, w) from a generator seeded by (seed, s), and process r takes rows
[r·b, (r+1)·b). The LoRA is wrapped in ``DistributedDataParallel`` (gradients averaged), so P processes of
batch b equal one process of batch P·b up to floating-point summation order. Randomness depends only on the
step, which makes a resumed run continue exactly as an uninterrupted one.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoints, comfy_bridge
from .config import DistillConfig
from .dataset import EncodedData
from .errors import DistillLossError
from .lora_layers import LoraSet, select_targets
from .recipe import DDIMSolver, Schedule, draw_step, lcd_step

LOG = logging.getLogger(__name__)


@dataclass
class DistillResult:
    path: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    lora: LoraSet | None = None
    validation: tuple[float, float] | None = None   # (before, after) with config.validation_draws > 0


class _Student(torch.nn.Module):
    """The module DDP wraps: the LoRA parameters, forward = the training clone's UNet with the LoRA on (its
    weight functions read ``lora.enabled``)."""

    def __init__(self, lora: LoraSet, runner: comfy_bridge.UNetRunner):
        super().__init__()
        self.lora = lora
        self._runner = runner

    def forward(self, x, t, context, y):
        self.lora.enabled = True
        return self._runner(x, t, context, y)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_lambda(name: str, warmup: int, total: int) -> Callable[[int], float]:
    """diffusers ``get_scheduler`` factors: constant, constant_with_warmup, linear, cosine (half cycle)."""
    def factor(step: int) -> float:
        if name == "constant":
            return 1.0
        if step < warmup:
            return step / max(1, warmup)
        if name == "constant_with_warmup":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, count: int) -> torch.Tensor:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 9973 + epoch))


def batch_indices(step: int, global_batch: int, count: int, seed: int) -> torch.Tensor:
    """Sample indices of step ``step``: consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
    first = step * global_batch
    out = []
    for position in range(first, first + global_batch):
        epoch, offset = divmod(position, count)
        out.append(int(_epoch_order(seed, epoch, count)[offset]))
    return torch.tensor(out, dtype=torch.long)


class Trainer:
    """One distillation run (the state of the loop); see :func:`distill_lcm_lora`."""

    def __init__(self, info, data: EncodedData, config: DistillConfig, runner, checkpoint_dir: Path | None):
        self.info, self.data, self.config, self.runner = info, data, config, runner
        self.device = runner.device
        self.rank, self.world = _world()
        self.checkpoint_dir = checkpoint_dir
        torch.manual_seed(config.seed)
        targets = select_targets(runner.unet, info.name_map, config.lora_target_modules)
        self.lora = LoraSet(targets, config.lora_rank, config.lora_alpha).to(self.device)
        comfy_bridge.install_lora(runner.patcher, self.lora)  # on the training clone, never the user's patcher
        runner.load()
        self.student = _Student(self.lora, runner)
        self.ddp = self.student
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.student, device_ids=ids, broadcast_buffers=False)
        params = list(self.lora.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1,
                                           config.adam_beta2), weight_decay=config.adam_weight_decay,
                                           eps=config.adam_epsilon)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.lr_scheduler, config.lr_warmup_steps, config.max_train_steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=runner.compute_dtype == torch.float16
                                           and self.device.type == "cuda")
        self.schedule = Schedule(info.alphas_cumprod, info.prediction).to(self.device)
        self.solver = DDIMSolver(info.alphas_cumprod, 1000, config.num_ddim_timesteps).to(self.device)
        self.step = 0
        self.losses: list[float] = []
        LOG.info("LoRA on %d modules, %.1f M parameters", len(self.lora.adapters), self.lora.parameter_count() / 1e6)

    # -- state ---------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"lora": self.lora.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "losses": list(self.losses), "config_fingerprint": self.config.fingerprint(),
                "data_fingerprint": self.data.fingerprint}

    def load(self, state: dict) -> None:
        self.lora.load_state_dict(state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.losses = int(state["step"]), [float(x) for x in state["losses"]]

    def save(self) -> None:
        """Checkpoint the state; refused (nothing written) when a LoRA parameter is NaN/Inf."""
        bad = [name for name, p in self.lora.named_parameters() if not torch.isfinite(p.detach()).all()]
        if bad:
            self._stop_on_bad_parameters(bad)
        if self.rank == 0 and self.checkpoint_dir is not None:
            checkpoints.save_checkpoint(self.checkpoint_dir, self.step, self.state(),
                                        self.config.checkpoints_total_limit)

    # -- one step ------------------------------------------------------------------------------------------
    def local_batch(self, step: int) -> dict:
        """This process's rows of the global batch of ``step`` (data and random draws)."""
        per = self.config.train_batch_size
        index = batch_indices(step, per * self.world, len(self.data), self.config.seed)
        return self._batch(self.config.seed * 1_000_003 + step, index)

    def _batch(self, generator_seed: int, index: torch.Tensor) -> dict:
        config, per = self.config, self.config.train_batch_size
        generator = torch.Generator().manual_seed(generator_seed)
        draw = draw_step(generator, per * self.world, tuple(self.data.latents.shape[1:]), config.num_ddim_timesteps,
                         config.w_min, config.w_max)
        rows = slice(self.rank * per, (self.rank + 1) * per)
        index = index[rows]

        def pick(tensor):
            return None if tensor is None else tensor[index].to(self.device)
        return {"latents": pick(self.data.latents), "context": pick(self.data.context), "y": pick(self.data.y),
                "uncond_y": pick(self.data.uncond_y), "draw": draw.shard(rows.start, rows.stop).to(self.device)}

    @torch.no_grad()
    def validation_loss(self, draws: int) -> float:
        """Mean loss over ``draws`` fixed batches (fixed samples, noise, timesteps, w; independent of the step):
        a held-out view of the consistency error, comparable before and after training."""
        per = self.config.train_batch_size * self.world
        index = torch.arange(per) % len(self.data)
        self.runner.load()
        values = [self.compute_loss(self._batch(-(i + 1), index)) for i in range(draws)]
        mean = torch.stack(values).mean()
        if self.world > 1:
            dist.all_reduce(mean)
            mean /= self.world
        return float(mean)

    def compute_loss(self, batch: dict) -> torch.Tensor:
        """The LCD loss of a batch: student through DDP, teacher = LoRA off (cond and uncond in one forward)."""
        context, y = batch["context"], batch["y"]
        n = context.shape[0]
        both_context = torch.cat([context, self.data.uncond_context.to(self.device).expand(n, -1, -1)])
        both_y = None if y is None else torch.cat([y, batch["uncond_y"]])

        def student(x, t):
            return self.ddp(x, t, context, y)

        def teacher(x, t):
            self.lora.enabled = False
            try:
                return self.runner(torch.cat([x, x]), torch.cat([t, t]), both_context, both_y).chunk(2)
            finally:
                self.lora.enabled = True

        def target(x, t):
            return self.student(x, t, context, y)
        return lcd_step(batch["latents"], batch["draw"], self.schedule, self.solver, self.config.recipe(), student,
                        teacher, target)

    def _stop_on_bad_loss(self, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        last = checkpoints.list_checkpoints(self.checkpoint_dir) if self.checkpoint_dir else []
        kept = f"the last good checkpoint is {last[-1][1]}" if last else "no checkpoint was written yet"
        raise DistillLossError(f"the loss became {value} at step {self.step + 1}; training stopped and no LoRA was "
                               f"written ({kept}). Lower learning_rate, use mixed_precision bf16 or 'no' (fp32), "
                               "or check the model and data for NaN/Inf.")

    def _stop_on_bad_parameters(self, names: list[str]) -> None:
        last = checkpoints.list_checkpoints(self.checkpoint_dir) if self.checkpoint_dir else []
        kept = f"the last good checkpoint is {last[-1][1].name}" if last else "no checkpoint was written yet"
        raise DistillLossError(f"the LoRA parameters became NaN/Inf at step {self.step} ({names[0]}); training "
                               f"stopped, no checkpoint or LoRA was written from them ({kept}). Lower learning_rate "
                               "or adam_weight_decay, or raise adam_epsilon.")

    def train_step(self) -> float:
        """One optimizer step (loss, backward, all-reduce through DDP, clip, AdamW); returns the mean loss.

        The training clone is (re)loaded first: anything that loaded another clone of the model since the last
        step (a prompt sampling the user's model) made ComfyUI take the LoRA's weight functions off."""
        self.runner.load()
        batch = self.local_batch(self.step)
        with comfy_bridge.gradient_checkpointing(self.runner.unet, self.config.gradient_checkpointing):
            loss = self.compute_loss(batch)
            self.scaler.scale(loss).backward()
        mean = loss.detach().clone()
        if self.world > 1:
            dist.all_reduce(mean)
            mean /= self.world
        value = float(mean)
        if not math.isfinite(value):
            self._stop_on_bad_loss(value)
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.lora.parameters(), self.config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(value)
        return value

    def run(self, progress: Callable[[int, int, float], None] | None = None,
            interrupt: Callable[[], None] | None = None) -> None:
        """Steps until ``max_train_steps``; checkpoint every ``checkpointing_steps`` (and at the end)."""
        total = self.config.max_train_steps
        while self.step < total:
            if interrupt is not None:
                interrupt()
            value = self.train_step()
            if progress is not None:
                progress(self.step, total, value)
            if self.step % self.config.checkpointing_steps == 0 or self.step == total:
                self.save()
