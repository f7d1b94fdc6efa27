"""The stricter quality check: is the drawn shape well formed, in one fill colour?

The attribute classifier (:class:`.nets.AttributeClassifier`) reads *which* shape and colours an image shows;
it also accepts malformed drawings of them (a lumpy circle, a torn square, a cross with a stray second fill
colour; issue 26). Two geometric tests on the image itself, given the classifier's reading:

* **Shape fit** -- the foreground (:func:`.geometry.foreground_mask`) against the best-fitting ideal shape of
  the classified kind, drawn by the world's own analytic masks (``world._shape_masks``). The fit: centre =
  the foreground's centroid (every shape of the world is centred on its centroid), size = the radius whose
  analytic area equals the foreground's (:data:`AREA_FACTOR`: circle pi, square 1.72^2, triangle
  (1.2^2) 3^1.5 / 4, cross 4 arm (2 - arm) with arm 0.36), then the best of a 3 x 3 x 3 neighbourhood
  (centre +-:data:`CENTRE_STEP` pixels, radius x (1 +- :data:`RADIUS_STEP`)). Accepted when the intersection
  over union (:func:`.geometry.mask_iou`) is at least :data:`MIN_IOU`.
* **One fill colour** -- every painted pixel (nearer to some palette fill, plain or in the striped style's dark
  shade, tinted as the background is, than to the background), eroded by one pixel (anti-aliased edges blend
  fill and background), must be nearest to the classified fill; accepted when at most :data:`MAX_STRAY` of
  them are another. (The shape fit's foreground is the image's own fill colour only, so a second colour
  also shows there as a piece missing from the shape.)

Thresholds come from real renders, their VAE round trips and hard negatives (:mod:`.malformed`); the numbers
are in docs/demo_model_card.md ("The stricter check").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import geometry, world

MIN_IOU = 0.85
MAX_STRAY = 0.05
CENTRE_STEP = 1.0  # pixels
RADIUS_STEP = 0.05
AREA_FACTOR = torch.tensor([math.pi, 1.72 ** 2, 1.44 * 3 ** 1.5 / 4, 4 * 0.36 * (2 - 0.36)])  # area / radius^2


@dataclass(frozen=True)
class ShapeReport:
    """Per image: the best shape-fit IoU, the share of stray-coloured interior pixels, and the verdict."""

    iou: torch.Tensor
    stray: torch.Tensor
    ok: torch.Tensor


def _pixel_grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in the world's frame: x right, y up, both in [-1, 1]."""
    coords = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(-coords, coords, indexing="ij")
    return gx, gy


def shape_fit_iou(mask: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """``[N]`` best IoU of boolean foregrounds ``[N, H, W]`` with the ideal shape of kind ``shapes`` ``[N]``
    (see the module doc for the fit). An empty foreground scores 0."""
    count, size = mask.shape[0], mask.shape[-1]
    gx, gy = _pixel_grid(size, mask.device)
    weight = mask.float()
    area = weight.sum((1, 2)).clamp(min=1)
    cx = (weight * gx).sum((1, 2)) / area
    cy = (weight * gy).sum((1, 2)) / area
    radius = (area * (2 / size) ** 2 / AREA_FACTOR.to(mask.device)[shapes]).sqrt()
    step = CENTRE_STEP * 2 / size
    best = torch.zeros(count, device=mask.device)
    rows = torch.arange(count, device=mask.device)
    for dx in (-step, 0.0, step):
        for dy in (-step, 0.0, step):
            x = gx[None] - (cx + dx)[:, None, None]
            y = gy[None] - (cy + dy)[:, None, None]
            for scale in (1 - RADIUS_STEP, 1.0, 1 + RADIUS_STEP):
                ideal = world._shape_masks(x, y, radius * scale)[shapes, rows]
                best = torch.maximum(best, geometry.mask_iou(mask, ideal))
    return torch.where(mask.flatten(1).any(1), best, torch.zeros_like(best))


def stray_colour_share(images: torch.Tensor, fills: torch.Tensor) -> torch.Tensor:
    """``[N]`` share of the painted pixels -- nearer to some palette fill (plain or shaded, tinted like the
    image's background) than to the background, eroded by one pixel -- whose nearest fill is not ``fills``
    ``[N]``; 1 where nothing is painted."""
    to_fills, to_background = geometry.colour_distances(images)
    painted = to_fills.amin(1) < to_background
    interior = -torch.nn.functional.max_pool2d(-painted[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5
    stray = interior & (to_fills.argmin(1) % len(world.FILLS) != fills[:, None, None])
    size = interior.flatten(1).sum(1).float()
    return torch.where(size > 0, stray.flatten(1).sum(1).float() / size.clamp(min=1), torch.ones_like(size))


@torch.no_grad()
def check(images: torch.Tensor, predicted: torch.Tensor, chunk: int = 128) -> ShapeReport:
    """The two geometric tests for ``images`` ``[N, 3, H, W]`` in [0, 1] read as ``predicted`` ``[N, >= 2]``
    (shape, fill, ...: the classifier's labels), computed on the images' device in chunks."""
    ious, strays = [], []
    for i in range(0, len(images), chunk):
        batch, labels = images[i:i + chunk], predicted[i:i + chunk].to(images.device)
        mask = geometry.foreground_mask(batch)
        ious.append(shape_fit_iou(mask, labels[:, 0]))
        strays.append(stray_colour_share(batch, labels[:, 1]))
    iou, stray = torch.cat(ious).cpu(), torch.cat(strays).cpu()
    return ShapeReport(iou, stray, (iou >= MIN_IOU) & (stray <= MAX_STRAY))
