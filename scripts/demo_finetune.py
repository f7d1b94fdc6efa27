#!/usr/bin/env python3
"""Fine-tune the demo teacher on a shifted world (issue 26; one command, fixed seeds): every UNet weight
trained, from the shipped teacher, on ``world.SMALL`` (smaller shapes anywhere) -- a fine-tuned model the
shipped LCM-LoRA never saw.

Writes into ``--out``:

* ``demo_shapes_small_finetune_delta.safetensors`` -- the shipped form: int8 delta on the teacher
  (:mod:`lcm_lora_pack.demo.finetune`);
* ``demo_shapes_sd15_small_unet_vae.safetensors`` -- the fine-tuned UNet rebuilt from that delta + the
  teacher's VAE (what the quality numbers are measured on: exactly what users assemble);
* ``finetune.json`` -- steps, seconds, loss, the delta's rounding error.

Recipe: the teacher's objective (:func:`demo.train.train_teacher`: eps-prediction, min-SNR-5, 10 % caption
dropout, EMA 0.999, bf16 autocast), AdamW 1.5e-4 (half the teacher's), warm-up 100 + cosine, batch 128, seed 7.

Usage::

    python scripts/demo_finetune.py --embeddings caption_embeddings.safetensors --out OUT [--seconds 110]
    python scripts/demo_finetune.py --embeddings ... --out OUT --toy        # 3 steps on a CPU (a dry run)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch
from lcm_lora_pack.demo import comfy_env, files, finetune, nets, train, world

LOG = logging.getLogger("demo_finetune")
SEED = 7


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the teacher UNet + VAE")
    parser.add_argument("--embeddings", type=Path, required=True, help="caption_embeddings.safetensors")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--seconds", type=float, default=1e9, help="stop early after this many seconds")
    parser.add_argument("--toy", action="store_true", help="3 warm-up steps of batch 4 (a CPU dry run)")
    return parser.parse_args(argv)


def split_teacher(tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """``(UNet state dict, VAE state dict)`` of a ``*_unet_vae`` file, prefixes removed."""
    unet = {k[len(nets.UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(nets.UNET_PREFIX)}
    vae = {k[len(nets.VAE_PREFIX):]: v for k, v in tensors.items() if k.startswith(nets.VAE_PREFIX)}
    return unet, vae


def load_modules(tensors: dict[str, torch.Tensor], device):
    unet_state, vae_state = split_teacher(tensors)
    unet = nets.build_unet(0)
    unet.load_state_dict({k: v.float() for k, v in unet_state.items()})
    vae = nets.build_taesd(0)
    vae.load_state_dict({k: v.float() for k, v in vae_state.items()})
    return unet.to(device), vae.to(device).eval().requires_grad_(False)


def main(argv=None) -> int:
    options = parse_args(argv)
    device = comfy_env.start_script(options.out)
    teacher = files.load_tensors(files.shipped(files.UNET_VAE, options.folder))
    unet, vae = load_modules(teacher, device)
    embeddings = files.load_tensors(options.embeddings)["embeddings"].to(device=device, dtype=torch.float32)
    stage = (train.Stage(3, 4, options.lr, SEED, warmup=100) if options.toy else
             train.Stage(options.steps, options.batch, options.lr, SEED, max_seconds=options.seconds, warmup=100))
    start = time.perf_counter()
    tuned, info = train.train_teacher(stage, vae, embeddings, device, init=unet, jitter=world.SMALL)
    seconds = time.perf_counter() - start
    tuned_state = {nets.UNET_PREFIX + k: v.detach().float().cpu() for k, v in tuned.state_dict().items()}
    base_unet = {k: v for k, v in teacher.items() if k.startswith(nets.UNET_PREFIX)}
    delta = finetune.quantise_delta(tuned_state, base_unet)
    files.save_tensors(delta, options.out / files.FINETUNE_DELTA,
                       {"demo": "fine-tune of the demo teacher on world.SMALL, int8 delta (demo/finetune.py)"},
                       dtype=None)
    rebuilt = finetune.apply_delta(teacher, delta)
    files.save_tensors(rebuilt, options.out / files.FINETUNE_UNET_VAE, {"demo": "demo fine-tune (small shapes)"})
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "world": dataclasses.asdict(world.SMALL),
              "planned_steps": stage.steps, "batch": stage.batch, "lr": stage.lr, "seed": SEED,
              "seconds": round(seconds, 1), **info,
              "rounding": finetune.rounding_report({k: rebuilt[k] for k in tuned_state}, tuned_state, base_unet),
              "delta_bytes": (options.out / files.FINETUNE_DELTA).stat().st_size}
    (options.out / "finetune.json").write_text(json.dumps(report, indent=1) + "\n")
    LOG.info("fine-tune: %s", json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
