#!/usr/bin/env python3
"""The demo family's quality numbers (one command, fixed seed): attribute accuracy (the stricter check) and
Fréchet distance in the classifier's feature space for every configuration of issues 13 and 26 (the fine-tune
rows when its file is there), written as ``quality.json`` and ``quality.md`` (the table of the README and
BENCHMARKS.md).

Runs on a GPU in about a minute for 512 prompts (on a CPU: use ``--count 8`` to try it).

Usage::

    python scripts/demo_evaluate.py --out OUT                       # the shipped files in models/demo
    python scripts/demo_evaluate.py --folder DIR --embeddings DIR/caption_embeddings.safetensors --out OUT
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from lcm_lora_pack.demo import comfy_env, evaluate, files, report

LOG = logging.getLogger("demo_evaluate")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the demo files")
    parser.add_argument("--embeddings", type=Path, help="caption embeddings (default: computed with the CLIP-L)")
    parser.add_argument("--finetune", type=Path, help="the fine-tune's UNet + VAE file (scripts/demo_finetune.py; "
                        "default: FOLDER/demo_shapes_sd15_small_unet_vae.safetensors if there)")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--only", nargs="+", help="only these configurations (names in demo/evaluate.py)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    comfy_env.prepare()
    folder = options.folder
    lcm = folder / files.LCM_LORA
    style = folder / files.STYLE_LORA
    finetune = options.finetune or folder / files.FINETUNE_UNET_VAE
    models, vae = evaluate.load_models(files.shipped(files.UNET_VAE, folder), lcm if lcm.is_file() else None,
                                       style if style.is_file() else None, finetune if finetune.is_file() else None)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    classifier = files.load_classifier(folder).to(device)
    embeddings = files.caption_embeddings(options.embeddings)
    configs = [c for c in evaluate.CONFIGS if not options.only or c.name in options.only]
    quality = evaluate.evaluate(models, vae, embeddings, classifier, options.count, options.seed, configs)
    quality["device"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    quality["torch"] = torch.__version__
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    training_path = folder / "training.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    table = report.quality_markdown(quality, training)
    (options.out / "quality.md").write_text(table)
    LOG.info("\n%s", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
