#!/usr/bin/env python3
"""Train the demo ControlNet (control = the shape's mask) on the shipped teacher and measure it (fixed seeds).

Writes to ``--out``: ``demo_shapes_controlnet_mask.safetensors`` (core's Control-LoRA format, fp16; see
demo/controlnet.py) and ``controlnet.json`` (training report, then accuracy and mask IoU per row of
demo/control_eval.py on ``--count`` prompts with random control masks, and the issue's target verdict).
``--toy`` runs every part in seconds on a CPU (a few steps, a few prompts) to check the script.

Usage::

    python scripts/demo_controlnet.py --out OUT                                    # shipped models/demo
    python scripts/demo_controlnet.py --folder DIR --embeddings DIR/caption_embeddings.safetensors --out OUT
    python scripts/demo_controlnet.py --toy --out /tmp/cn-toy
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from lcm_lora_pack.demo import comfy_env, control_eval, controlnet, evaluate, files, nets, train

LOG = logging.getLogger("demo_controlnet")
SEED = 5
EVAL_SEED = 23


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the demo files")
    parser.add_argument("--embeddings", type=Path, help="caption embeddings (default: computed with the CLIP-L)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rank", type=int, default=controlnet.RANK)
    parser.add_argument("--seconds", type=float, default=1e9, help="stop training after this many seconds")
    parser.add_argument("--count", type=int, default=512, help="evaluation prompts")
    parser.add_argument("--toy", action="store_true", help="a few steps and prompts (seconds on a CPU)")
    return parser.parse_args(argv)


def load_teacher_and_vae(path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The teacher UNet and the TAESD autoencoder as trained (float32, ComfyUI's classes)."""
    tensors = files.load_tensors(path)
    unet, vae = nets.build_unet(0), nets.build_taesd(0)
    unet.load_state_dict({k[len(nets.UNET_PREFIX):]: v.float() for k, v in tensors.items()
                          if k.startswith(nets.UNET_PREFIX)})
    vae.load_state_dict({k[len(nets.VAE_PREFIX):]: v.float() for k, v in tensors.items()
                         if k.startswith(nets.VAE_PREFIX)})
    return unet.eval(), vae.eval().requires_grad_(False)


def run_training(options, device, embeddings, report: dict) -> Path:
    steps, batch = (3, 2) if options.toy else (options.steps, options.batch)
    stage = train.Stage(steps, batch, options.lr, SEED, max_seconds=options.seconds, warmup=1 if options.toy else 100)
    unet, vae = load_teacher_and_vae(files.shipped(files.UNET_VAE, options.folder))
    start = time.perf_counter()
    tensors, info = controlnet.train_controlnet(stage, unet, vae.to(device), embeddings.to(device), device,
                                                rank=options.rank)
    info.update(seconds=round(time.perf_counter() - start, 1), batch=batch, lr=options.lr, seed=SEED)
    path = files.save_tensors(tensors, options.out / files.CONTROLNET,
                              {"demo": "demo shapes ControlNet (mask), Control-LoRA format, see docs/demo_model_card.md"})
    info["file_bytes"] = path.stat().st_size
    report["training"] = info
    return path


def run_evaluation(options, device, embeddings, control_path: Path, report: dict) -> None:
    import comfy.controlnet

    folder = options.folder
    lcm, style = folder / files.LCM_LORA, folder / files.STYLE_LORA
    models, vae = evaluate.load_models(files.shipped(files.UNET_VAE, folder), lcm if lcm.is_file() else None,
                                       style if style.is_file() else None)
    control = comfy.controlnet.load_controlnet(str(control_path))
    classifier = files.load_classifier(folder).to(device)
    count = 4 if options.toy else options.count
    start = time.perf_counter()
    report["evaluation"] = control_eval.evaluate_control(models, vae, embeddings.cpu(), classifier, control, count,
                                                         EVAL_SEED)
    report["evaluation"]["seconds"] = round(time.perf_counter() - start, 1)


def main(argv=None) -> int:
    options = parse_args(argv)
    device = comfy_env.start_script(options.out)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "toy": options.toy, "command": " ".join(sys.argv)}
    embeddings = files.caption_embeddings(options.embeddings)
    path = run_training(options, device, embeddings, report)
    run_evaluation(options, device, embeddings, path, report)
    (options.out / "controlnet.json").write_text(json.dumps(report, indent=1) + "\n")
    LOG.info("target: %s", json.dumps(report["evaluation"]["target"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
