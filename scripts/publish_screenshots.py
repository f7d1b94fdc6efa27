#!/usr/bin/env python3
"""Turn the browser test's screenshots into the templates' thumbnails and the README's images.

    LCMPACK_SCREENSHOTS=out/screenshots .venv/bin/python -m pytest tests/test_browser_workflows.py \
        tests/test_workflows_third_party.py
    .venv/bin/python scripts/publish_screenshots.py out/screenshots

For every example ``NAME`` (or those named by ``--only``): ``SRC/NAME.png`` (the shipped workflow as the
frontend shows it after a drop) becomes ``example_workflows/NAME.jpg`` (the template browser's thumbnail: its
middle at 4:3, JPEG) and ``docs/images/NAME.png``; ``SRC/template_browser.png`` (the pack's section of the
template browser) is copied to ``docs/images/`` when present. Files are written via a temporary name and a rename.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "example_workflows"
IMAGES = REPO / "docs" / "images"
THUMBNAIL_WIDTH, DOC_WIDTH = 640, 1600
THUMBNAIL_ASPECT = 4 / 3  # the template browser's cards are about square; a wide graph would be a thin strip
LOG = logging.getLogger("publish_screenshots")


def _resized(image: Image.Image, width: int) -> Image.Image:
    if image.width <= width:
        return image
    return image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)


def _thumbnail(graph: Image.Image) -> Image.Image:
    """The middle of a wide graph screenshot at 4:3 (loader, prompts and sampler columns), full height."""
    width = round(graph.height * THUMBNAIL_ASPECT)
    if graph.width > width:
        left = (graph.width - width) // 2
        graph = graph.crop((left, 0, left + width, graph.height))
    return _resized(graph, THUMBNAIL_WIDTH)


def _save(image: Image.Image, path: Path, **options) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    image.save(tmp, **options)
    os.replace(tmp, path)
    LOG.info("wrote %s", path.relative_to(REPO))


def publish(source: Path, only: list[str] | None = None) -> int:
    names = only or sorted(p.stem for p in EXAMPLES.glob("*.json"))
    missing = [n for n in names if not (source / f"{n}.png").is_file()]
    if missing:
        LOG.error("no screenshot for %s in %s: run tests/test_browser_workflows.py and "
                  "tests/test_workflows_third_party.py with LCMPACK_SCREENSHOTS=%s",
                  missing, source, source)
        return 1
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name in names:
        with Image.open(source / f"{name}.png") as shot:
            graph = shot.convert("RGB")
        _save(_thumbnail(graph), EXAMPLES / f"{name}.jpg", format="JPEG", quality=85)
        _save(_resized(graph, DOC_WIDTH), IMAGES / f"{name}.png", format="PNG", optimize=True)
    browser = source / "template_browser.png"
    if browser.is_file():
        with Image.open(browser) as shot:
            _save(_resized(shot.convert("RGB"), DOC_WIDTH), IMAGES / "template_browser.png", format="PNG",
                  optimize=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder the browser test wrote its screenshots to")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="publish only these workflows' screenshots")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = parser.parse_args(argv)
    return publish(options.source, options.only)


if __name__ == "__main__":
    sys.exit(main())
