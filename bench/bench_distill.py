"""Distillation throughput and memory: the pack's trainer vs the reference recipe, same process, interleaved.

* pack: ``distill.trainer.Trainer.train_step`` on a ComfyUI ``ModelPatcher`` (UNet stored in the autocast
  dtype, as ComfyUI loads it on a GPU), LoRA r64 on the script's 14 module types as ComfyUI weight functions, the
  teacher = the same UNet with the LoRA off (cond + uncond in one forward), AdamW, grad clipping.
* reference: the step of diffusers' ``train_lcm_distill_lora_sd_wds.py`` / ``_sdxl_wds.py`` as the script runs
  it (``devkit/distill_reference.py``): fp32 diffusers ``UNet2DConditionModel`` student wrapped by PEFT
  (r64, same targets) + a second fp32 UNet as teacher, accelerate-style fp16 autocast + GradScaler, AdamW.

Both arms use the same random full-size weights (``bench/synthetic.py``), random latents/text, the same
global batch. Rounds alternate the arms; each round times ``--steps`` optimizer steps after warm-up.
Memory: resident bytes of an arm (weights, LoRA, optimizer state, measured as the allocation growth while it
is built and warmed up) + the transient peak of its steps (``max_memory_allocated`` − allocated at start).
``--smoke``: a tiny SD1.5-shaped UNet on the CPU at 64², for the test that checks the script runs.

    PYTHONPATH=.pack python -m lcm_lora_pack.bench.bench_distill --device cuda --families sd15,sdxl --out out/bench-distill
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("bench_distill")
BATCH = {"sd15": 8, "sdxl": 2, "tiny-sd15": 2}
RANK = 64


@dataclass
class Arm:
    name: str
    step: object
    resident: int = 0
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def _allocated(device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(family, batch: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    side = family.image_size // 8
    out = {"latents": torch.randn((batch, 4, side, side), generator=generator),
           "context": torch.randn((batch, 77, family.context_dim), generator=generator)}
    if family.pooled_dim:
        out["pooled"] = torch.randn((batch, family.pooled_dim), generator=generator)
    return out


def pack_arm(family, sd, data, device, steps_total: int) -> Arm:
    """The pack's trainer on a ComfyUI model loaded in fp16 (CPU: fp32) from the same weights."""
    import comfy.sd
    from lcm_lora_pack.distill import comfy_bridge
    from lcm_lora_pack.distill.config import DistillConfig
    from lcm_lora_pack.distill.dataset import EncodedData
    from lcm_lora_pack.distill.trainer import Trainer

    from .synthetic import diffusers_to_comfy_unet

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    patcher = comfy.sd.load_diffusion_model_state_dict(
        {k: v.to(dtype) for k, v in diffusers_to_comfy_unet(sd, family.unet_config).items()},
        model_options={"dtype": dtype})
    info = comfy_bridge.inspect_model(patcher)
    patcher = comfy_bridge.training_model(patcher)
    runner_device = comfy_bridge.load_for_training(patcher)
    batch = data["latents"].shape[0]
    y = uncond_y = None
    if family.pooled_dim:
        size = [(family.image_size, family.image_size)] * batch
        y = comfy_bridge.sdxl_adm(patcher, data["pooled"], size, [(0, 0)] * batch, family.image_size)
        uncond_y = comfy_bridge.sdxl_adm(patcher, torch.zeros_like(data["pooled"]), size, [(0, 0)] * batch,
                                         family.image_size)
    uncond = torch.zeros_like(data["context"][:1]) if family.pooled_dim else torch.randn_like(data["context"][:1])
    encoded = EncodedData(latents=data["latents"], context=data["context"], uncond_context=uncond, y=y,
                          uncond_y=uncond_y, fingerprint="bench")
    mixed = "fp16" if device.type == "cuda" else "no"
    config = DistillConfig(resolution=family.image_size, train_batch_size=batch, lora_rank=RANK, lora_alpha=RANK,
                           mixed_precision=mixed, max_train_steps=steps_total).resolved(info.family)
    trainer = Trainer(info, encoded, config, comfy_bridge.UNetRunner(patcher, mixed, runner_device), None)
    arm = Arm("pack trainer (ComfyUI UNet, LoRA as weight functions, teacher = LoRA off)", trainer.train_step)
    arm.keep = (patcher, trainer)
    return arm


def reference_arm(family, unet, data, device) -> Arm:
    """diffusers' script step: PEFT student (fp32) + separate fp32 teacher, fp16 autocast, GradScaler, AdamW."""
    from lcm_lora_pack.devkit.distill_reference import reference_loss, reference_scheduler
    from lcm_lora_pack.distill.lora_layers import DEFAULT_TARGETS
    from lcm_lora_pack.distill.recipe import draw_step
    from peft import LoraConfig, get_peft_model

    teacher = unet
    student = get_peft_model(copy.deepcopy(unet).train(), LoraConfig(r=RANK, lora_alpha=RANK,
                                                                      target_modules=list(DEFAULT_TARGETS)))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    fp16 = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if fp16 else contextlib.nullcontext
    weight_dtype = torch.float16 if fp16 else torch.float32
    from diffusers import DDPMScheduler

    acp = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    scheduler = reference_scheduler("epsilon", acp)
    latents, context = data["latents"].to(device), data["context"].to(device)
    batch = latents.shape[0]
    uncond = torch.zeros_like(context) if family.pooled_dim else torch.randn_like(context[:1]).expand(batch, -1, -1)
    added = uncond_added = None
    if family.pooled_dim:
        ids = torch.tensor([[family.image_size, family.image_size, 0, 0, family.image_size, family.image_size]],
                           dtype=torch.float32, device=device).repeat(batch, 1)
        added = {"text_embeds": data["pooled"].to(device), "time_ids": ids}
        uncond_added = {"text_embeds": torch.zeros_like(added["text_embeds"]), "time_ids": ids}
    counter = {"step": 0}

    def step() -> float:
        generator = torch.Generator().manual_seed(counter["step"])
        draw = draw_step(generator, batch, tuple(latents.shape[1:]), 50, 5.0, 15.0).to(device)
        loss = reference_loss(student, teacher, latents, context, uncond, added, uncond_added, draw, scheduler,
                              "huber", 0.001, autocast=autocast, weight_dtype=weight_dtype)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        counter["step"] += 1
        return float(loss)

    arm = Arm("reference (diffusers UNet + PEFT, 2 UNets, script step)", step)
    arm.keep = (student, teacher)
    return arm


def _warm(arm: Arm, device, warmup: int, before: int) -> None:
    for _ in range(warmup):
        arm.step()
    _sync(device)
    arm.resident = _allocated(device) - before


def _time_round(arm: Arm, device, steps: int) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start_alloc = _allocated(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        arm.losses.append(arm.step())
    _sync(device)
    arm.times.append((time.perf_counter() - start) / steps)
    if device.type == "cuda":
        arm.peaks.append(arm.resident + torch.cuda.max_memory_allocated(device) - start_alloc)


def bench_family(name: str, device, rounds: int, steps: int, warmup: int) -> list[dict]:
    from diffusers import UNet2DConditionModel

    from .synthetic import FAMILIES, _materialise, random_state_dict

    family = FAMILIES[name]
    data = random_batch(family, BATCH[name])
    with torch.device("meta"):
        meta = UNet2DConditionModel(**family.unet_config)
    before = _allocated(device)  # the reference's teacher *is* these weights: counted in its resident bytes
    sd = random_state_dict(meta, device, torch.float32, seed=0)
    reference = reference_arm(family, _materialise(meta, sd).to(device), data, device)
    _warm(reference, device, warmup, before)
    before = _allocated(device)
    pack = pack_arm(family, sd, data, device, steps_total=warmup + rounds * steps + 1)
    _warm(pack, device, warmup, before)
    for _ in range(rounds):
        for arm in (reference, pack):
            _time_round(arm, device, steps)
    rows = []
    for arm in (reference, pack):
        median = statistics.median(arm.times)
        rows.append({"family": name, "batch": BATCH[name], "resolution": family.image_size, "arm": arm.name,
                     "ms_per_step": median * 1e3, "steps_per_s": 1.0 / median,
                     "samples_per_s": BATCH[name] / median,
                     "peak_gib": (max(arm.peaks) / 2 ** 30) if arm.peaks else None,
                     "resident_gib": arm.resident / 2 ** 30, "last_loss": arm.losses[-1]})
    ref_row, pack_row = rows
    pack_row["throughput_vs_reference"] = pack_row["steps_per_s"] / ref_row["steps_per_s"]
    if ref_row["peak_gib"]:
        pack_row["memory_vs_reference"] = pack_row["peak_gib"] / ref_row["peak_gib"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| family | batch | arm | ms/step | steps/s | samples/s | peak GiB | vs reference |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "–"
        ratio = ""
        if "throughput_vs_reference" in r:
            ratio = f"{r['throughput_vs_reference']:.2f}× speed"
            if "memory_vs_reference" in r:
                ratio += f", {r['memory_vs_reference']:.2f}× memory"
        lines.append(f"| {r['family']} {r['resolution']}² | {r['batch']} | {r['arm']} | {r['ms_per_step']:.1f} | "
                     f"{r['steps_per_s']:.3f} | {r['samples_per_s']:.2f} | {peak} | {ratio} |")
    return "\n".join(lines)


def environment(device) -> list[str]:
    import diffusers
    import peft

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return [f"- device: {name}", f"- torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"peft {peft.__version__}, python {platform.python_version()}",
            f"- command: PYTHONPATH=.pack python -m lcm_lora_pack.bench.bench_distill {' '.join(sys.argv[1:])}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default="sd15,sdxl")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per arm per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny UNet on the CPU (script check, not a measure)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench-distill")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.smoke:
        args.device, args.families, args.rounds, args.steps, args.warmup = "cpu", "tiny-sd15", 1, 1, 1
    from lcm_lora_pack.distill.cli import boot_comfy

    boot_comfy(None)
    device = torch.device(args.device)
    rows = []
    for name in args.families.split(","):
        rows += bench_family(name.strip(), device, args.rounds, args.steps, args.warmup)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    report = "\n".join(["## LCM-LoRA distillation step: pack vs reference", *environment(device), "", table(rows)])
    (args.out / "bench_distill.md").write_text(report + "\n")
    (args.out / "bench_distill.json").write_text(json.dumps(rows, indent=1))
    sys.stdout.write(report + "\nBENCH DISTILL WRITTEN\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
