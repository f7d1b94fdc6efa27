"""How well the demo ControlNet's control is followed: attribute accuracy and the drawn shape's IoU with the
control mask, per sampling configuration, on random prompts with random control masks.

Each prompt gets a control mask of its own shape at a random place and size (``world.render_with_masks`` of
the prompt's labels at ``world.CONTROL_PLACEMENT``: centres up to +-0.3, radii 0.30-0.46, wider than the
world's own jitter), the white-on-black hint of :func:`.controlnet.hint_images`. The images
are made as :mod:`.evaluate` makes them (core samplers for the teacher, the pack's LCM loop for the LCM-LoRA),
the ControlNet applied as ``ControlNetApplyAdvanced`` applies it (strength 1). Scores: the classifier's
joint accuracy (shape, fill and background as prompted) and IoU (:func:`.geometry.mask_iou`) of
:func:`.geometry.foreground_mask` of the image with the mask; ``real`` is the world's own render for that mask
(the ceiling of the segmentation), the rows without the ControlNet the chance level of a shape drawn where
the teacher likes.
"""
from __future__ import annotations

import logging
import time

import torch

from . import evaluate, geometry, world

LOG = logging.getLogger(__name__)
ROWS = (  # (row name, Config of evaluate.CONFIGS, ControlNet applied)
    ("teacher_25_controlnet", "teacher_25", True),
    ("lcm_4_controlnet", "lcm_4", True),
    ("lcm_style_4_controlnet", "lcm_style_4", True),
    ("teacher_25", "teacher_25", False),
    ("lcm_4", "lcm_4", False),
)
TARGET_RATIO = 0.95  # issue 24: LCM-LoRA 4-step + ControlNet >= 0.95 x the teacher's 25-step IoU and accuracy


def control_prompts(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(labels [N, 4], control coverage [N, H, W], real images [N, 3, H, W])`` of ``count`` plain prompts."""
    labels = world.random_labels(count, torch.Generator().manual_seed(seed), styled=False)
    images, coverage = world.render_with_masks(labels, torch.Generator().manual_seed(seed + 1),
                                               jitter=world.CONTROL_PLACEMENT)
    return labels, coverage, images


def shape_scores(classifier, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> dict:
    """Joint accuracy (and per attribute) and the IoU of the drawn shape with ``masks`` (mean, median, share
    of images above 0.5)."""
    from .train import accuracy_report

    predicted, _ = evaluate.classify(classifier, images)
    iou = geometry.mask_iou(geometry.foreground_mask(images), masks)
    return {"accuracy": accuracy_report(predicted, labels), "iou_mean": iou.mean().item(),
            "iou_median": iou.median().item(), "iou_above_0.5": (iou > 0.5).float().mean().item()}


@torch.no_grad()
def evaluate_control(models: dict, vae, embeddings, classifier, control, count: int, seed: int, rows=ROWS,
                     chunk: int = 256) -> dict:
    """Every row on the same prompts, masks and noise seeds; adds the target's verdict (module doc)."""
    configs = {config.name: config for config in evaluate.CONFIGS}
    labels, coverage, real = control_prompts(count, seed)
    masks = coverage > 0.5
    results = {"count": count, "seed": seed, "rows": {"real": {
        "label": "the world's own render of each prompt for its mask", **shape_scores(classifier, real, labels, masks)}}}
    hints = None
    for name, config_name, controlled in rows:
        config = configs[config_name]
        model = evaluate.model_for(models, config)
        if model is None:
            LOG.warning("skipping %s: its LoRA is missing", name)
            continue
        prompt_labels = labels.clone()
        prompt_labels[:, 3] = int(config.style)
        start = time.perf_counter()
        images = []
        for i in range(0, count, chunk):
            if controlled:
                from .controlnet import hint_images

                hints = (control, hint_images(coverage[i:i + chunk]))
            images.append(evaluate.generate(model, vae, embeddings, prompt_labels[i:i + chunk], config,
                                            seed + 17 + i, hints if controlled else None))
        images = torch.cat(images)
        row = {"label": config.label + (" + ControlNet" if controlled else ", no ControlNet"),
               "seconds": round(time.perf_counter() - start, 2), **shape_scores(classifier, images, prompt_labels, masks)}
        results["rows"][name] = row
        LOG.info("%s: joint %.3f, IoU %.3f (%.1f s)", name, row["accuracy"]["joint"], row["iou_mean"], row["seconds"])
    results["target"] = target_verdict(results["rows"])
    return results


def target_verdict(rows: dict) -> dict:
    """LCM-LoRA 4-step + ControlNet against the teacher's 25-step + ControlNet: ratios and met / missed."""
    teacher, lcm = rows.get("teacher_25_controlnet"), rows.get("lcm_4_controlnet")
    if teacher is None or lcm is None:
        return {"verdict": "not measured"}
    iou = lcm["iou_mean"] / max(teacher["iou_mean"], 1e-9)
    accuracy = lcm["accuracy"]["joint"] / max(teacher["accuracy"]["joint"], 1e-9)
    met = iou >= TARGET_RATIO and accuracy >= TARGET_RATIO
    return {"iou_ratio": iou, "accuracy_ratio": accuracy, "required": TARGET_RATIO, "verdict": "met" if met else "missed"}
