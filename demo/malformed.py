"""Hard negatives for the stricter check: the world's scenes drawn wrong in the ways generators get them wrong.

Each keeps the world's jitter (centre +-0.12, radius 0.42-0.56, tint +-0.04), palette and 2x supersampled
anti-aliasing (:mod:`.world`), so the attribute classifier still reads the prompt in most of them; only the
geometry or the colouring is broken:

* ``lumpy`` -- the radius varies with the angle: the shape's mask at ``r (1 + a sin(n theta + phi))``,
  ``n`` in 3..6 lobes, ``a`` in [0.15, 0.3];
* ``torn`` -- the part above a horizontal cut (``y > c``, ``c`` in [-0.2 r, 0.2 r]) slid sideways by 0.25-0.4 r;
* ``two_colour`` -- the shape's part beyond a random line (covering roughly 20-45 % of it) painted in another
  fill colour of the palette.
"""
from __future__ import annotations

import math

import torch

from . import world

KINDS = ("lumpy", "torn", "two_colour")


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _masks(kind: str, labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(shape mask, second-colour mask)`` ``[N, H, W]`` floats on the supersampled grid."""
    count, rows = len(labels), torch.arange(len(labels))
    r = radius[:, None, None]
    second = torch.zeros_like(x)
    if kind == "lumpy":
        lobes = torch.randint(3, 7, (count,), generator=generator).float()[:, None, None]
        depth = _uniform(count, 0.15, 0.3, generator)[:, None, None]
        phase = _uniform(count, 0, 2 * math.pi, generator)[:, None, None]
        scale = 1 + depth * torch.sin(lobes * torch.atan2(y, x) + phase)
        mask = world._shape_masks(x / scale, y / scale, radius)[labels[:, 0], rows]
    elif kind == "torn":
        cut = _uniform(count, -0.2, 0.2, generator)[:, None, None] * r
        sign = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0)
        slide = (sign * _uniform(count, 0.25, 0.4, generator))[:, None, None] * r
        x = torch.where(y > cut, x - slide, x)
        mask = world._shape_masks(x, y, radius)[labels[:, 0], rows]
    elif kind == "two_colour":
        mask = world._shape_masks(x, y, radius)[labels[:, 0], rows]
        angle = _uniform(count, 0, 2 * math.pi, generator)[:, None, None]
        offset = _uniform(count, 0.15, 0.5, generator)[:, None, None] * r
        second = mask & (x * torch.cos(angle) + y * torch.sin(angle) > offset)
        mask = mask & ~second
    else:
        raise ValueError(f"malformation {kind!r} is not one of {KINDS}")
    return mask.float(), second.float()


def render(labels: torch.Tensor, kind: str, generator: torch.Generator,
           resolution: int = world.RESOLUTION) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [0, 1] of plain scenes ``labels`` (:func:`world.random_labels`) drawn with
    malformation ``kind`` (one of :data:`KINDS`); the same generator state gives the same pixels."""
    count = labels.shape[0]
    centre, radius, tint = world.draw_jitter(count, generator)
    other = (labels[:, 1] + torch.randint(1, len(world.FILLS), (count,), generator=generator)) % len(world.FILLS)
    gx, gy = world.supersampled_grid(resolution)
    x, y = gx[None] - centre[:, 0, None, None], gy[None] - centre[:, 1, None, None]
    shape, second = _masks(kind, labels, x, y, radius, generator)
    palette = torch.tensor(list(world.FILLS.values()))
    backgrounds = torch.tensor(list(world.BACKGROUNDS.values()))[labels[:, 2]]
    image = (shape[:, None] * palette[labels[:, 1]][:, :, None, None]
             + second[:, None] * palette[other][:, :, None, None]
             + (1 - shape - second)[:, None] * backgrounds[:, :, None, None])
    image = torch.nn.functional.avg_pool2d(image, 2)
    return (image + tint[:, :, None, None]).clamp(0, 1)
