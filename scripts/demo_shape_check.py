#!/usr/bin/env python3
"""How strict the stricter check is (issue 26; one command, fixed seeds, CPU): acceptance of the shipped
classifier alone and of the stricter check (classifier + demo/shape_check.py) on real renders and on hard
negatives, written as ``shape_check.json`` and a markdown table.

Sets (``--count`` images each, random prompts): real renders (plain, striped, the fine-tune's small-shapes
world), real renders through the shipped VAE (encode, decode: what every sampled image passes through), and
the three malformations of demo/malformed.py. On real sets the number to read is the share accepted (should be
~1); on hard negatives the share rejected by the stricter check ("accuracy" on negatives).

Usage::

    python scripts/demo_shape_check.py --out OUT [--count 512]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from lcm_lora_pack.demo import comfy_env, files, malformed, shape_check, world

LOG = logging.getLogger("demo_shape_check")
SEED = 26


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the classifier and VAE")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def vae_round_trip(folder: Path, images: torch.Tensor) -> torch.Tensor:
    comfy_env.prepare()
    import comfy.sd

    _, _, vae, _ = comfy.sd.load_checkpoint_guess_config(str(files.shipped(files.UNET_VAE, folder)), output_vae=True,
                                                         output_clip=False)
    return vae.decode(vae.encode(images.movedim(1, -1))).movedim(-1, 1).float().cpu().clamp(0, 1)


def image_sets(folder: Path, count: int):
    """``name -> (images, prompt labels, is a hard negative)``."""
    labels = world.random_labels(count, torch.Generator().manual_seed(SEED))
    striped = labels.clone()
    striped[:, 3] = 1
    real = world.render(labels, torch.Generator().manual_seed(SEED + 1))
    sets = {"real": (real, labels, False),
            "real_striped": (world.render(striped, torch.Generator().manual_seed(SEED + 2)), striped, False),
            "real_small_world": (world.render(labels, torch.Generator().manual_seed(SEED + 3), jitter=world.SMALL),
                                 labels, False),
            "real_vae_round_trip": (vae_round_trip(folder, real), labels, False)}
    for offset, kind in enumerate(malformed.KINDS):
        sets[kind] = (malformed.render(labels, kind, torch.Generator().manual_seed(SEED + 10 + offset)), labels, True)
    return sets


@torch.no_grad()
def measure(classifier, images: torch.Tensor, labels: torch.Tensor) -> dict:
    predicted = classifier.predict(images)
    read = (predicted[:, :3] == labels[:, :3]).all(1)  # shape, fill, background: the "joint" reading
    report = shape_check.check(images, predicted)
    return {"classifier_accepts": read.float().mean().item(), "strict_accepts": (read & report.ok).float().mean().item(),
            "iou_median": report.iou.median().item(), "iou_p01": report.iou.quantile(0.01).item(),
            "stray_p99": report.stray.quantile(0.99).item()}


def markdown(results: dict) -> str:
    lines = ["| set | classifier alone accepts | stricter check accepts | median IoU | 1 % IoU |",
             "|---|---:|---:|---:|---:|"]
    for name, row in results["sets"].items():
        lines.append(f"| {name}{' (hard negative)' if row['hard_negative'] else ''} | {row['classifier_accepts']:.3f} | "
                     f"{row['strict_accepts']:.3f} | {row['iou_median']:.3f} | {row['iou_p01']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    classifier = files.load_classifier(options.folder)
    results = {"count": options.count, "seed": SEED, "min_iou": shape_check.MIN_IOU,
               "max_stray": shape_check.MAX_STRAY, "torch": torch.__version__, "sets": {}}
    for name, (images, labels, negative) in image_sets(options.folder, options.count).items():
        results["sets"][name] = {"hard_negative": negative, **measure(classifier, images, labels)}
        LOG.info("%s: %s", name, results["sets"][name])
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "shape_check.json").write_text(json.dumps(results, indent=1) + "\n")
    (options.out / "shape_check.md").write_text(markdown(results))
    LOG.info("\n%s", markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
