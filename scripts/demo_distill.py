#!/usr/bin/env python3
"""Distil the demo's LCM-LoRA from the demo teacher with the pack's own trainer (one command, fixed seeds).

1. assembles the teacher checkpoint (shipped UNet + VAE + the generated, fingerprint-checked CLIP-L);
2. writes the training data: ``--count`` world images (PNG) with same-stem ``.txt`` captions;
3. runs ``python -m lcm_lora_pack.distill`` (latent consistency distillation as diffusers'
   ``train_lcm_distill_lora_sd_wds.py``) with the settings below, writing
   ``demo_shapes_lcm_lora.safetensors`` into ``--out``.

Usage::

    python scripts/demo_distill.py --folder models/demo --out OUT [--max_train_steps N]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from lcm_lora_pack.demo import comfy_env, files, world

LOG = logging.getLogger("demo_distill")
DATA_SEED = 5
DISTILL_SEED = 6
# cfg 7.5 in ComfyUI's convention is w = 6.5 in the LCM script's (c + w (c - u)); the range brackets it.
SETTINGS = {"resolution": 128, "train_batch_size": 64, "max_train_steps": 1200, "learning_rate": 3e-4,
            "lora_rank": 32, "lora_alpha": 32.0, "w_min": 3.0, "w_max": 9.0, "num_ddim_timesteps": 50, "loss_type": "huber",
            "mixed_precision": "bf16", "seed": DISTILL_SEED}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the teacher UNet + VAE")
    parser.add_argument("--out", type=Path, required=True, help="where the LCM-LoRA and the report go")
    parser.add_argument("--work", type=Path, help="scratch folder (checkpoint, data; default OUT/work)")
    parser.add_argument("--count", type=int, default=2048, help="training images")
    for name, value in SETTINGS.items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more trainer flags")
    return parser.parse_args(argv)


def write_data(folder: Path, count: int, seed: int = DATA_SEED, chunk: int = 256) -> Path:
    """``count`` plain world scenes as ``NNNNN.png`` + ``NNNNN.txt`` (the caption)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, count, chunk):
        images, labels = world.sample(min(chunk, count - start), seed * 1_000_003 + start)
        pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        for offset, (array, label) in enumerate(zip(pixels, labels, strict=True)):
            stem = folder / f"{start + offset:05d}"
            Image.fromarray(array).save(stem.with_suffix(".png"))
            stem.with_suffix(".txt").write_text(world.Scene.from_labels(label.tolist()).caption + "\n")
    return folder


def main(argv=None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    work = options.work or options.out / "work"
    checkpoint = work / files.CHECKPOINT
    start = time.perf_counter()
    files.assemble_checkpoint(checkpoint, options.folder)
    data = write_data(work / "data", options.count)
    LOG.info("checkpoint and %d images ready in %.1f s", options.count, time.perf_counter() - start)
    settings = {name: getattr(options, name) for name in SETTINGS}
    command = [sys.executable, "-m", "lcm_lora_pack.distill", "--checkpoint", str(checkpoint),
               "--data_dir", str(data), "--output", files.LCM_LORA, "--loras_dir", str(options.out),
               "--summary_json", str(options.out / "distill_summary.json"), "--overwrite",
               "--comfyui_path", str(comfy_env.comfyui_root()), "--output_dir", str(work / "checkpoints"),
               "--checkpointing_steps", "1000000"]
    for name, value in settings.items():
        command += [f"--{name}", str(value)]
    command += options.extra
    LOG.info("running %s", " ".join(command))
    start = time.perf_counter()
    done = subprocess.run(command, env=dict(os.environ))
    report = {"command": command[1:], "settings": settings, "images": options.count, "returncode": done.returncode,
              "seconds": round(time.perf_counter() - start, 1)}
    (options.out / "distill.json").write_text(json.dumps(report, indent=1) + "\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
