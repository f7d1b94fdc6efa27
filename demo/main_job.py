"""``make run`` on the demo family (the default): install the shipped files into the run's models folder,
then per prompt the five-column sheet (:mod:`.sheet`), a summary with the shipped quality table.

Outputs, under ``OUT/demo/``: ``sheet_<prompt>.png`` (the side-by-side sheets), ``images/`` (every column's
image), ``summary.md`` (seconds and verdicts per column, then the quality table) and ``quality.md``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from . import files, report, sheet, world

LOG = logging.getLogger(__name__)


def install_models(cache: Path) -> Path:
    """The demo family as a ComfyUI models folder under ``cache`` (assembled once, then reused)."""
    return files.install(cache)


def shipped_quality_table() -> str | None:
    quality_path = files.SHIPPED / "quality.json"
    if not quality_path.is_file():
        return None
    training_path = files.SHIPPED / "training.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    return report.quality_markdown(json.loads(quality_path.read_text()), training)


def run(host, out: Path, prompts=sheet.DEFAULT_PROMPTS) -> list[sheet.SheetResult]:
    """Run the sheets on a booted ComfyUI ``host`` (its models folder holds the demo family)."""
    out = out / "demo"
    out.mkdir(parents=True, exist_ok=True)
    classifier = files.load_classifier()
    runner = sheet.CachedRunner(host.execution)
    results = []
    for labels in prompts:
        scene = world.Scene(*labels)
        LOG.info("sheet: %s ...", scene.caption)
        results.append(sheet.run_sheet(runner, host.base / "output", scene, classifier, out))
        LOG.info("  %s", ", ".join(f"{c.column.key} {c.seconds:.1f} s {'ok' if c.correct else 'WRONG'}"
                                   for c in results[-1].cells))
    table = shipped_quality_table()
    if table is not None:
        (out / "quality.md").write_text(table)
    (out / "summary.md").write_text(sheet.summary_markdown(results, table))
    return results


def failed(results: list[sheet.SheetResult]) -> bool:
    return any(cell.error for result in results for cell in result.cells)
