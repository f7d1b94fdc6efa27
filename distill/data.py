"""Training data: an image folder with same-stem ``.txt`` captions, or a prompts file (pure; PIL + torch).

Images are resized so the shorter side equals the resolution (bilinear, the scripts' default interpolation),
then centre- or randomly cropped to a square and optionally flipped; SDXL gets the original size (h, w) and
the crop's top-left corner as its micro-conditions, as diffusers' SDXL scripts record them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DistillDataError

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ALLOWED_ROOTS_ENV = "LCMPACK_DISTILL_DATA_ROOTS"
MAX_PROMPT_CHARS = 1000          # CLIP reads 77 tokens (≈ 300 characters); longer text is cut before encoding
MAX_CAPTION_FILE_BYTES = 64 * 1024
MAX_PROMPTS_FILE_BYTES = 16 * 1024 * 1024


@dataclass
class Sample:
    """One training example before encoding."""

    caption: str
    image: Path | None = None
    label: str | None = None     # what errors call the image (the node: relative to the input folder)


@dataclass
class Prepared:
    """An image ready for the VAE: pixels (H, W, 3) in [0, 1] and SDXL's micro-conditions."""

    pixels: torch.Tensor
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def _read_caption(path: Path, label: str) -> str:
    try:
        return read_text_capped(path, MAX_CAPTION_FILE_BYTES, "caption file", label)
    except (OSError, UnicodeDecodeError) as error:
        raise DistillDataError(f"caption file {label} cannot be read as UTF-8 text ({type(error).__name__}); fix "
                               "or remove it.") from error


def read_text_capped(path: Path, limit: int, what: str, label: str | None = None) -> str:
    """The UTF-8 text of ``path`` (stripped), refused when the file is larger than ``limit`` bytes."""
    with open(path, "rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise DistillDataError(f"{what} {label or path} is larger than {limit // 1024} KiB; a caption or prompt "
                               f"file this big is not training text. Shorten it (the text encoder reads "
                               f"{MAX_PROMPT_CHARS} characters at most).")
    return raw.decode("utf-8").strip()


def confine(given: str, roots: list[Path]) -> Path:
    """The folder ``given`` names (relative to ``roots[0]``, ``~`` expanded), resolved with symlinks followed;
    refused unless it lies inside one of ``roots`` (also resolved). The error names only ``given``."""
    resolved_roots = [Path(r).resolve() for r in roots]
    try:
        candidate = (resolved_roots[0] / Path(given.strip()).expanduser()).resolve()
    except (OSError, ValueError, RuntimeError) as error:  # NUL byte, name too long, symlink loop
        raise DistillDataError(f"data_dir {given.strip()[:200]!r} is not a usable folder name "
                               f"({type(error).__name__}); give a folder inside ComfyUI's input folder.") from error
    if not any(candidate.is_relative_to(root) for root in resolved_roots):
        raise DistillDataError(f"data_dir {given.strip()[:200]!r} is outside ComfyUI's input folder; put the images and "
                               "captions in a folder inside ComfyUI's input folder and give its relative name (the "
                               f"server owner can allow more folders with {ALLOWED_ROOTS_ENV}).")
    return candidate


def allowed_roots(input_dir: str | Path) -> list[Path]:
    """ComfyUI's input folder, then the folders the server owner lists in ``$LCMPACK_DISTILL_DATA_ROOTS``
    (``os.pathsep``-separated; an environment setting no API request can change)."""
    extra = [Path(p).expanduser() for p in os.environ.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(input_dir), *extra]


def scan_image_folder(folder: str | Path, label: str | None = None,
                      roots: list[Path] | None = None) -> list[Sample]:
    """Images of ``folder`` (not recursive) with their captions; every image must have ``<stem>.txt``.

    ``label`` is what errors call the folder (default: its path). With ``roots`` every image and caption must
    resolve inside one of them (a symlink out of the allowed folders is refused by name).
    """
    folder = Path(folder)
    label = label if label is not None else str(folder)
    if not folder.is_dir():
        raise DistillDataError(f"data folder {label} does not exist or is not a folder; give the folder that holds "
                               "the training images and their .txt captions.")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DistillDataError(f"data folder {label} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images "
                               "with same-stem .txt captions, or use a prompts file instead.")
    if roots is not None:
        _check_inside(images, roots, label)
    missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DistillDataError(f"{len(missing)} image(s) in {label} have no caption: {shown}. Add a same-stem .txt "
                               "file with the caption for each (an empty file means an empty caption).")
    return [Sample(caption=_read_caption(p.with_suffix(".txt"), f"{label}/{p.stem}.txt"), image=p,
                   label=f"{label}/{p.name}") for p in images]


def _check_inside(images: list[Path], roots: list[Path], label: str) -> None:
    resolved_roots = [Path(r).resolve() for r in roots]
    for image in images:
        for path in (image, image.with_suffix(".txt")):
            if path.exists() and not any(path.resolve().is_relative_to(r) for r in resolved_roots):
                raise DistillDataError(f"{label}/{path.name} links outside ComfyUI's input folder; copy the file "
                                       "into the data folder instead of linking it.")


def read_prompts_file(path: str | Path) -> list[Sample]:
    """One prompt per non-empty line (lines starting with ``#`` are comments); at most 16 MiB of text."""
    path = Path(path)
    if not path.is_file():
        raise DistillDataError(f"prompts file {path} does not exist; give a text file with one prompt per line.")
    try:
        lines = read_text_capped(path, MAX_PROMPTS_FILE_BYTES, "prompts file").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DistillDataError(f"prompts file {path} cannot be read as UTF-8 text ({error}).") from error
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DistillDataError(f"prompts file {path} has no prompts; write one prompt per line.")
    return [Sample(caption=p) for p in prompts]


def bounded_text(text: str) -> str:
    """``text`` as it is when short; else with whitespace runs collapsed (CLIP's tokenizer drops them too) and
    cut to ``MAX_PROMPT_CHARS``.

    The trainer reads the first 77 tokens (the reference scripts truncate there) and a token spans at least one
    character, so the cut leaves the encoding unchanged for plain text while a megabyte-long caption no longer
    costs minutes and gigabytes in the tokenizer.
    """
    if len(text) <= MAX_PROMPT_CHARS:
        return text
    cleaned = " ".join(text.split())
    if len(cleaned) > MAX_PROMPT_CHARS:
        LOG.warning("a caption/prompt of %d characters was cut to %d before encoding (77 tokens are used)",
                    len(cleaned), MAX_PROMPT_CHARS)
        return cleaned[:MAX_PROMPT_CHARS]
    return cleaned


def prepare_image(path: Path, resolution: int, center_crop: bool, random_flip: bool,
                  generator: torch.Generator, label: str | None = None) -> Prepared:
    """Load, resize (shorter side = resolution), crop to a square, maybe flip; pixels in [0, 1].

    Images above PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused by name.
    """
    from PIL import Image, UnidentifiedImageError

    label = label or str(path)
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except Image.DecompressionBombError as error:
        raise DistillDataError(f"image {label} has more pixels than the safety limit ({Image.MAX_IMAGE_PIXELS} "
                               "pixels; a possible decompression bomb); downscale it or remove it.") from error
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DistillDataError(f"image {label} cannot be read ({type(error).__name__}); replace or remove it.") \
            from error
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
