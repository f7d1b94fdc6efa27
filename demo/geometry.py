"""Where the shape is: segment a shape-world image into shape and background, and compare masks.

The world (:mod:`.world`) paints one shape in a fill colour (or, striped, in bands of that colour and a
darker shade) on a plain background; the shape never reaches the outer 12.5 % of the image (centre jitter
<= 0.12, extent <= 0.80 of the half-width: the triangle's apex, 1.2 x 0.56 + 0.12), so a frame of
:data:`BORDER` of each side is background. :func:`foreground_mask` reads the image's own background colour
off that frame (its per-channel median, so tint and generator drift are included), takes the tint as its
offset from the nearest palette background (the world tints fill and background alike) and the image's fill
as the tinted palette fill most of its non-background pixels are nearest to (plain or shaded by
``world.STRIPE_SHADE``, counted together), then labels a pixel as shape when it is nearer (Euclidean RGB) to
that fill, plain or shaded, than to the background colour: an anti-aliased edge pixel is shape when it is
more than half covered. Known colours make it a nearest-colour rule, no
threshold to tune; a generated image whose "shape" has drifted to a non-palette colour is still segmented
by which side of that boundary it falls on.

:func:`mask_iou` is intersection over union per image (Jaccard), 1 when both masks are empty.
"""
from __future__ import annotations

import torch

from . import world

BORDER = 0.0625  # of the image side: 8 px at 128 px


def palette_fills(device=None) -> torch.Tensor:
    """``[2 * F, 3]`` the fill colours, plain then shaded as the striped style paints its dark bands."""
    fills = torch.tensor(list(world.FILLS.values()), device=device)
    return torch.cat([fills, fills * world.STRIPE_SHADE])


def background_colour(images: torch.Tensor, border: float = BORDER) -> torch.Tensor:
    """``[N, 3]`` per-channel median of each image's outer frame (``border`` of the side on every edge)."""
    size = images.shape[-1]
    width = max(1, round(border * size))
    frame = torch.ones(images.shape[-2:], dtype=torch.bool, device=images.device)
    frame[width:-width, width:-width] = False
    return images[:, :, frame].median(dim=2).values


def colour_distances(images: torch.Tensor, border: float = BORDER) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to_fills [N, 2F, H, W], to_background [N, H, W])``: squared RGB distance of every pixel of ``images``
    (``[N, 3, H, W]`` in [0, 1]) to each palette fill (plain, then shaded), tinted as the image's background is
    tinted, and to the image's background colour (see the module doc)."""
    images = images.float()
    background = background_colour(images, border)
    known = torch.tensor(list(world.BACKGROUNDS.values()), device=images.device)
    tint = background - known[torch.cdist(background, known).argmin(1)]  # [N, 3]
    to_background = (images - background[:, :, None, None]).pow(2).sum(1)
    fills = palette_fills(images.device)[None] + tint[:, None]  # [N, 2F, 3]
    to_fills = (images[:, None] - fills[:, :, :, None, None]).pow(2).sum(2)  # [N, 2F, H, W]
    return to_fills, to_background


def foreground_mask(images: torch.Tensor, border: float = BORDER) -> torch.Tensor:
    """``[N, H, W]`` bool: pixels of ``images`` (``[N, 3, H, W]`` in [0, 1]) nearer to a fill colour than to
    the image's background colour (see the module doc)."""
    to_fills, to_background = colour_distances(images, border)
    count = len(world.FILLS)
    nearest = to_fills.argmin(1) % count  # a shaded band counts for its plain fill
    votes = torch.nn.functional.one_hot(nearest, count).masked_fill(~(to_fills.amin(1) < to_background)[..., None], 0)
    own = votes.flatten(1, 2).sum(1).argmax(1)  # [N]: the image's fill colour
    rows = torch.arange(len(images), device=images.device)
    to_own = torch.minimum(to_fills[rows, own], to_fills[rows, own + count])
    return to_own < to_background


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N]`` intersection over union of boolean masks ``[N, H, W]`` (1 where both are empty)."""
    a, b = a.bool().flatten(1), b.bool().flatten(1)
    intersection = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
