"""pytest plugin (loaded with -p from pyproject): collect the repository root as a plain directory, not as a Python package.

The root ``__init__.py`` is the ComfyUI entry point and imports ``comfy_api``; it must only be imported by
ComfyUI's loader. Tests reach the pack's nodes through a booted ComfyUI (see tests/harness).
"""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collect_directory(path: Path, parent):
    if path.resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
