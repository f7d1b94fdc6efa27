"""The loss curve as an image tensor (1, H, W, 3) in [0, 1] (ComfyUI's IMAGE layout), drawn with PIL."""
from __future__ import annotations

import math

import torch


def _smoothed(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_curve_image(losses: list[float], width: int = 640, height: int = 360) -> torch.Tensor:
    """Per-step loss (light) and its running mean over ~5 % of the steps (dark), log-scaled y axis."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 15, 20, height - 35
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    finite = [v for v in losses if math.isfinite(v) and v > 0]
    if finite:
        low, high = math.log10(min(finite)), math.log10(max(finite))
        high = high if high > low else low + 1.0

        def point(i: int, value: float) -> tuple[float, float]:
            x = left + (right - left) * (i / max(1, len(losses) - 1))
            y = bottom - (bottom - top) * ((math.log10(max(value, 10 ** low)) - low) / (high - low))
            return x, y
        for series, colour in ((losses, (150, 190, 235)), (_smoothed(losses, max(1, len(losses) // 20)),
                                                          (20, 60, 160))):
            points = [point(i, v) for i, v in enumerate(series) if math.isfinite(v)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            elif points:
                draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=colour)
        draw.text((5, top), f"{10 ** high:.3g}", fill=(0, 0, 0))
        draw.text((5, bottom - 10), f"{10 ** low:.3g}", fill=(0, 0, 0))
    draw.text((left, bottom + 8), f"LCD loss over {len(losses)} steps (log scale)", fill=(0, 0, 0))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width, 3)
    return (pixels.to(torch.float32) / 255.0).unsqueeze(0)
