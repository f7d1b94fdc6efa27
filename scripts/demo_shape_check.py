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
import functools
import json
import logging
import sys
from pathlib import Path

import torch
from lcm_lora_pack.demo import comfy_env, files, malformed, nets, shape_check, world

LOG = logging.getLogger("demo_shape_check")
SEED = 26
CHUNK = 128


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the classifier and VAE")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


@functools.lru_cache(maxsize=1)
def load_vae(folder: Path):
    """The shipped TAESD (``first_stage_model.*`` of the teacher file) as ComfyUI's own module class."""
    tensors = files.load_tensors(files.shipped(files.UNET_VAE, folder))
    vae = nets.build_taesd(0)
    vae.load_state_dict({k[len(nets.VAE_PREFIX):]: v.float() for k, v in tensors.items()
                         if k.startswith(nets.VAE_PREFIX)})
    return vae.eval()


@torch.no_grad()
def vae_round_trip(folder: Path, images: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Encode and decode with the shipped VAE (the latent scaling cancels: decoder(encoder(x)))."""
    vae = load_vae(folder)
    return torch.cat([vae.taesd_decoder(vae.taesd_encoder(images[i:i + chunk])).clamp(0, 1)
                      for i in range(0, len(images), chunk)])


def image_sets(folder: Path, labels: torch.Tensor, seed: int):
    """``name -> (images, prompt labels, is a hard negative)`` for plain prompts ``labels``."""
    striped = labels.clone()
    striped[:, 3] = 1
    real = world.render(labels, torch.Generator().manual_seed(seed + 1))
    sets = {"real": (real, labels, False),
            "real_striped": (world.render(striped, torch.Generator().manual_seed(seed + 2)), striped, False),
            "real_small_world": (world.render(labels, torch.Generator().manual_seed(seed + 3), jitter=world.SMALL),
                                 labels, False),
            "real_vae_round_trip": (vae_round_trip(folder, real), labels, False)}
    for offset, kind in enumerate(malformed.KINDS):
        sets[kind] = (malformed.render(labels, kind, torch.Generator().manual_seed(seed + 10 + offset)), labels, True)
    return sets


@torch.no_grad()
def measure(classifier, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: the classifier's joint reading (shape, fill, background), the stricter verdict, IoU, stray share."""
    predicted = classifier.predict(images)
    read = (predicted[:, :3] == labels[:, :3]).all(1)
    report = shape_check.check(images, predicted)
    return {"read": read, "strict": read & report.ok, "iou": report.iou, "stray": report.stray}


def summary(values: dict[str, torch.Tensor]) -> dict:
    return {"classifier_accepts": values["read"].float().mean().item(),
            "strict_accepts": values["strict"].float().mean().item(), "iou_median": values["iou"].median().item(),
            "iou_p01": values["iou"].quantile(0.01).item(), "stray_p99": values["stray"].quantile(0.99).item()}


def markdown(results: dict) -> str:
    lines = ["| set | classifier alone accepts | stricter check accepts | median IoU | 1 % IoU |",
             "|---|---:|---:|---:|---:|"]
    for name, row in results["sets"].items():
        lines.append(f"| {name}{' (hard negative)' if row['hard_negative'] else ''} | {row['classifier_accepts']:.3f} | "
                     f"{row['strict_accepts']:.3f} | {row['iou_median']:.3f} | {row['iou_p01']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    options = parse_args(argv)
    comfy_env.prepare()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    classifier = files.load_classifier(options.folder)
    results = {"count": options.count, "seed": SEED, "min_iou": shape_check.MIN_IOU,
               "max_stray": shape_check.MAX_STRAY, "torch": torch.__version__, "sets": {}}
    collected: dict[str, dict] = {}
    all_labels = world.random_labels(options.count, torch.Generator().manual_seed(SEED))
    for start in range(0, options.count, CHUNK):  # in chunks: the supersampled renders are large
        sets = image_sets(options.folder, all_labels[start:start + CHUNK], SEED + 100 * start)
        for name, (images, labels, negative) in sets.items():
            values = measure(classifier, images, labels)
            entry = collected.setdefault(name, {"hard_negative": negative, "values": []})
            entry["values"].append(values)
    for name, entry in collected.items():
        values = {key: torch.cat([v[key] for v in entry["values"]]) for key in entry["values"][0]}
        results["sets"][name] = {"hard_negative": entry["hard_negative"], **summary(values)}
        LOG.info("%s: %s", name, results["sets"][name])
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "shape_check.json").write_text(json.dumps(results, indent=1) + "\n")
    (options.out / "shape_check.md").write_text(markdown(results))
    LOG.info("\n%s", markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
