"""Training data: an image folder with same-stem ``.txt`` captions, or a prompts file (pure; PIL + torch).

Images are resized so the shorter side equals the resolution (bilinear, the scripts' default interpolation),
then centre- or randomly cropped to a square and optionally flipped; SDXL gets the original size (h, w) and
the crop's top-left corner as its micro-conditions, as diffusers' SDXL scripts record them.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DistillDataError

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class Sample:
    """One training example before encoding."""

    caption: str
    image: Path | None = None


@dataclass
class Prepared:
    """An image ready for the VAE: pixels (H, W, 3) in [0, 1] and SDXL's micro-conditions."""

    pixels: torch.Tensor
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def _read_caption(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DistillDataError(f"caption file {path} cannot be read as UTF-8 text ({error}); fix or remove it.") \
            from error


def scan_image_folder(folder: str | Path) -> list[Sample]:
    """Images of ``folder`` (not recursive) with their captions; every image must have ``<stem>.txt``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DistillDataError(f"data folder {folder} does not exist or is not a folder; give the folder that holds "
                               "the training images and their .txt captions.")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DistillDataError(f"data folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images "
                               "with same-stem .txt captions, or use a prompts file instead.")
    missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DistillDataError(f"{len(missing)} image(s) in {folder} have no caption: {shown}. Add a same-stem .txt "
                               "file with the caption for each (an empty file means an empty caption).")
    return [Sample(caption=_read_caption(p.with_suffix(".txt")), image=p) for p in images]


def read_prompts_file(path: str | Path) -> list[Sample]:
    """One prompt per non-empty line (lines starting with ``#`` are comments)."""
    path = Path(path)
    if not path.is_file():
        raise DistillDataError(f"prompts file {path} does not exist; give a text file with one prompt per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DistillDataError(f"prompts file {path} cannot be read as UTF-8 text ({error}).") from error
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DistillDataError(f"prompts file {path} has no prompts; write one prompt per line.")
    return [Sample(caption=p) for p in prompts]


def prepare_image(path: Path, resolution: int, center_crop: bool, random_flip: bool,
                  generator: torch.Generator) -> Prepared:
    """Load, resize (shorter side = resolution), crop to a square, maybe flip; pixels in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DistillDataError(f"image {path} cannot be read ({error}); replace or remove it.") from error
    original = (image.height, image.width)
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.BILINEAR)
    if center_crop:
        top, left = (image.height - resolution) // 2, (image.width - resolution) // 2
    else:
        top = int(torch.randint(0, image.height - resolution + 1, (1,), generator=generator))
        left = int(torch.randint(0, image.width - resolution + 1, (1,), generator=generator))
    image = image.crop((left, top, left + resolution, top + resolution))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    pixels = pixels.to(torch.float32) / 255.0
    if random_flip and float(torch.rand((1,), generator=generator)) < 0.5:
        pixels = pixels.flip(1)
    return Prepared(pixels=pixels, original_size=original, crop_top_left=(top, left))


def data_fingerprint(samples: list[Sample]) -> str:
    """sha256 over captions and image bytes (names, order and content), 16 hex digits."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.caption.encode() + b"\0")
        if sample.image is not None:
            digest.update(sample.image.name.encode() + b"\0")
            digest.update(hashlib.sha256(sample.image.read_bytes()).digest())
    return digest.hexdigest()[:16]
