"""Regenerate the registry blocks of the docs and help pages from ``accelerators/registry.py``.

Every ``<!-- registry:NAME -->`` … ``<!-- /registry:NAME -->`` block of the files below is replaced by what
``accelerators.render`` generates now; ``tests/test_accel_registry.py`` fails when a committed file differs.

    python scripts/build_accelerator_docs.py          # rewrite the files
    python scripts/build_accelerator_docs.py --check  # exit 1 and name the stale files
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("docs/accelerators.md", "docs/workflows.md", "web/docs/LCMPack_KSamplerLCM.md",
             "web/docs/LCMPack_LCMLoraLoader.md")


def _render():
    sys.path.insert(0, str(ROOT / ".pack"))
    from lcm_lora_pack.accelerators.render import fill_blocks

    return fill_blocks


def stale_files(fill_blocks) -> list[str]:
    return [name for name in GENERATED if fill_blocks((ROOT / name).read_text()) != (ROOT / name).read_text()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    options = parser.parse_args()
    fill_blocks = _render()
    stale = stale_files(fill_blocks)
    if options.check:
        for name in stale:
            sys.stderr.write(f"stale: {name} (run scripts/build_accelerator_docs.py)\n")
        return 1 if stale else 0
    for name in stale:
        path = ROOT / name
        path.write_text(fill_blocks(path.read_text()))
        sys.stdout.write(f"wrote {name}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
