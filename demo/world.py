"""The procedural captioned world: one coloured shape on a coloured background, 128 x 128 pixels.

A scene has four attributes -- shape, fill colour, background colour and style -- and small uncaptioned
jitter (position, size, colour tint) so that images of one caption still differ. The fill and background
palettes are disjoint, so a caption never needs word order to say which colour is which.

Caption: ``"a red circle on a white background"``; the striped style (horizontal bands of the fill colour
and a darker shade inside the shape) appends the trigger phrase :data:`STYLE_TRIGGER`. Only the style
LoRA is trained on striped scenes; the base model never sees them.

Rendering is pure torch (no fonts, no PIL): analytic masks on a 2x supersampled grid, averaged down, so a
seed gives the same pixels on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

RESOLUTION = 128
SHAPES = ("circle", "square", "triangle", "cross")
FILLS = {"red": (0.86, 0.12, 0.12), "green": (0.15, 0.70, 0.24), "blue": (0.16, 0.27, 0.86),
         "yellow": (0.94, 0.82, 0.16), "purple": (0.59, 0.24, 0.75)}
BACKGROUNDS = {"white": (0.94, 0.94, 0.94), "black": (0.08, 0.08, 0.08), "gray": (0.50, 0.50, 0.50),
               "brown": (0.47, 0.31, 0.16)}
FILL_NAMES = tuple(FILLS)
BACKGROUND_NAMES = tuple(BACKGROUNDS)
STYLE_TRIGGER = "striped style"
STRIPE_SHADE = 0.35
STRIPE_PERIOD = 0.25  # in the [-1, 1] image coordinates: 16 px at 128 px
ATTRIBUTES = ("shape", "fill", "background", "style")
ATTRIBUTE_SIZES = {"shape": len(SHAPES), "fill": len(FILLS), "background": len(BACKGROUNDS), "style": 2}


@dataclass(frozen=True)
class Jitter:
    """The uncaptioned variation of a world: centre offset up to +-``centre`` per axis, radius uniform in
    [``radius_low``, ``radius_high``] (image half-width 1), colour tint up to +-``tint`` per channel."""

    centre: float = 0.12
    radius_low: float = 0.42
    radius_high: float = 0.56
    tint: float = 0.04


BASE = Jitter()
# The shifted world of the demo's fine-tuned teacher (issue 26): smaller shapes (radius 0.30-0.38, about half
# the area) anywhere in a 2.5x wider centre range. Its extent stays inside the frame geometry.py reads the
# background from (triangle apex 0.30 + 1.2 x 0.38 = 0.76 < 0.875).
SMALL = Jitter(centre=0.30, radius_low=0.30, radius_high=0.38)
# The demo ControlNet's masks (``render_with_masks(jitter=CONTROL_PLACEMENT)``): centres up to +-0.3, radii
# 0.30-0.46, so a shape can be put well away from where the world draws it; the triangle's apex (1.2 r above
# the centre) stays inside 0.852 of the half-width, out of the outer 1/16 of the image that demo/geometry.py
# reads as background.
CONTROL_PLACEMENT = Jitter(centre=0.30, radius_low=0.30, radius_high=0.46)


@dataclass(frozen=True)
class Scene:
    """The captioned attributes of one image (indices into :data:`SHAPES`, fills, backgrounds)."""

    shape: int
    fill: int
    background: int
    styled: bool = False

    @property
    def caption(self) -> str:
        text = f"a {FILL_NAMES[self.fill]} {SHAPES[self.shape]} on a {BACKGROUND_NAMES[self.background]} background"
        return f"{text}, {STYLE_TRIGGER}" if self.styled else text

    @property
    def labels(self) -> tuple[int, int, int, int]:
        return self.shape, self.fill, self.background, int(self.styled)

    @classmethod
    def from_labels(cls, labels) -> Scene:
        shape, fill, background, styled = (int(v) for v in labels)
        return cls(shape, fill, background, bool(styled))


def all_scenes(styled: bool | None = None) -> list[Scene]:
    """Every captioned combination (80 plain, 80 striped), plain first, in a fixed order."""
    flags = (False, True) if styled is None else (styled,)
    return [Scene(s, f, b, flag) for flag in flags for s in range(len(SHAPES))
            for f in range(len(FILLS)) for b in range(len(BACKGROUNDS))]


def all_captions() -> list[str]:
    """The captions the models are conditioned on, in a fixed order: the empty one (for classifier-free
    guidance), then every plain and every striped scene."""
    return [""] + [scene.caption for scene in all_scenes()]


def random_labels(count: int, generator: torch.Generator, styled: bool | float = False) -> torch.Tensor:
    """``[count, 4]`` int64 labels (shape, fill, background, style) drawn uniformly; ``styled`` is a flag or
    the probability of a striped scene."""
    shape = torch.randint(len(SHAPES), (count,), generator=generator)
    fill = torch.randint(len(FILLS), (count,), generator=generator)
    background = torch.randint(len(BACKGROUNDS), (count,), generator=generator)
    if isinstance(styled, bool):
        style = torch.full((count,), int(styled), dtype=torch.int64)
    else:
        style = (torch.rand(count, generator=generator) < styled).long()
    return torch.stack([shape, fill, background, style], dim=1)


def caption_index(labels: torch.Tensor) -> torch.Tensor:
    """Row of each label in :func:`all_captions` (0 is the empty caption)."""
    shape, fill, background, style = labels.unbind(1)
    plain = (shape * len(FILLS) + fill) * len(BACKGROUNDS) + background
    return 1 + plain + style * (len(SHAPES) * len(FILLS) * len(BACKGROUNDS))


def _shape_masks(x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``[4, N, H, W]`` boolean masks of every shape (y points up), areas roughly equal."""
    r = radius[:, None, None]
    circle = x * x + y * y <= r * r
    square = torch.maximum(x.abs(), y.abs()) <= 0.86 * r
    t = 1.2 * r  # equilateral triangle, apex up, centred on its centroid
    triangle = (y >= -0.5 * t) & (y <= t - 1.732 * x.abs())
    arm = 0.36 * r
    cross = ((x.abs() <= arm) & (y.abs() <= r)) | ((y.abs() <= arm) & (x.abs() <= r))
    return torch.stack([circle, square, triangle, cross])


def render(labels: torch.Tensor, generator: torch.Generator, resolution: int = RESOLUTION,
           device: torch.device | str = "cpu", jitter: Jitter = BASE) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in [0, 1] for ``labels`` (from :func:`random_labels`), jitter from ``generator``.

    Jitter (not captioned, :class:`Jitter`; :data:`BASE` by default): centre offset up to +-0.12, radius
    0.42-0.56 (image half-width 1), colour tint +-0.04 per channel, applied to fill and background alike. The
    random numbers are drawn on the CPU, so ``device`` changes only where the pixels are computed.
    """
    return render_with_masks(labels, generator, resolution, device, jitter)[0]


def draw_jitter(count: int, generator: torch.Generator, jitter: Jitter = BASE):
    """``(centre [N, 2], radius [N], tint [N, 3])`` drawn from ``generator`` in this order (CPU)."""
    centre = (torch.rand(count, 2, generator=generator) - 0.5) * 2 * jitter.centre
    radius = jitter.radius_low + (jitter.radius_high - jitter.radius_low) * torch.rand(count, generator=generator)
    tint = (torch.rand(count, 3, generator=generator) - 0.5) * 2 * jitter.tint
    return centre, radius, tint


def supersampled_grid(resolution: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx, gy)`` ``[2H, 2W]``: the 2x supersampled pixel centres, x right and y up, in [-1, 1]."""
    size = 2 * resolution
    coords = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(-coords, coords, indexing="ij")
    return gx, gy


def render_with_masks(labels: torch.Tensor, generator: torch.Generator, resolution: int = RESOLUTION,
                      device: torch.device | str = "cpu", jitter: Jitter = BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render`'s images (same generator draws, same pixels) and the shapes' coverage ``[N, H, W]`` in
    [0, 1]: the analytic mask averaged over each pixel's 2 x 2 supersamples (the control of the demo
    ControlNet; ``> 0.5`` is the shape's mask). ``jitter``: the world's (:data:`BASE`) by default,
    :data:`CONTROL_PLACEMENT` for the ControlNet's masks."""
    count = labels.shape[0]
    centre, radius, tint = (t.to(device) for t in draw_jitter(count, generator, jitter))
    labels = labels.to(device)
    gx, gy = supersampled_grid(resolution, device)
    x = gx[None] - centre[:, 0, None, None]
    y = gy[None] - centre[:, 1, None, None]
    masks = _shape_masks(x, y, radius)
    mask = masks[labels[:, 0], torch.arange(count)].float()
    fills = torch.tensor(list(FILLS.values()), device=device)[labels[:, 1]]
    backgrounds = torch.tensor(list(BACKGROUNDS.values()), device=device)[labels[:, 2]]
    stripes = (torch.floor((gy[None] + 1) / (STRIPE_PERIOD / 2)) % 2 == 1).float()
    shade = 1 - (1 - STRIPE_SHADE) * stripes * labels[:, 3, None, None].float()
    fill_image = fills[:, :, None, None] * shade[:, None]
    image = mask[:, None] * fill_image + (1 - mask[:, None]) * backgrounds[:, :, None, None]
    image = torch.nn.functional.avg_pool2d(image, 2)
    coverage = torch.nn.functional.avg_pool2d(mask[:, None], 2)[:, 0]
    return (image + tint[:, :, None, None]).clamp(0, 1), coverage


def sample(count: int, seed: int, styled: bool | float = False, resolution: int = RESOLUTION,
           device: torch.device | str = "cpu", jitter: Jitter = BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``count`` random scenes from ``seed`` (the same seed gives the same batch)."""
    generator = torch.Generator().manual_seed(seed)
    labels = random_labels(count, generator, styled)
    return render(labels, generator, resolution, device, jitter), labels.to(device)
