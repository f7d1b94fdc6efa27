"""The distillation sweep of issue 26 (``scripts/demo_distill_sweep.py``, ``demo/sweep.py``).

The toy sweep runs every part on the CPU through the real trainer (``lcm_lora_pack.distill`` in the script's
process), the real evaluation and the shipped demo teacher: the table then has one row per grid point, every cell
measured; a second call with the same ``--out`` finds every row done and changes nothing. The plan's pure parts --
which units are left, where a run continues, what fits a device call, the table of a partial sweep, the docs'
markers -- are checked without ComfyUI.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lcm_lora_pack.demo import sweep

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "distill.md"


def _run(out: Path, *args: str) -> subprocess.CompletedProcess:
    from lcm_lora_pack.devkit.host import subprocess_env

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_distill_sweep.py"), "--out", str(out), *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO, env=subprocess_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]  # the header's first line out
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_toy_sweep_fills_one_row_per_grid_point_and_a_second_call_redoes_none(tmp_path):
    doc = tmp_path / "distill.md"
    doc.write_text(DOC.read_text())
    out = tmp_path / "out"
    first = _run(out, "--toy", "--write-docs", str(doc))
    results = json.loads((out / "sweep.json").read_text())
    runs = sweep.grid(toy=True)
    expected = {sweep.TEACHER_ROW} | {sweep.row_id(r, p) for r in runs for p in r.points}
    assert set(results["rows"]) == expected and len(results["calls"]) == 1
    long = [results["rows"][sweep.row_id(runs[0], p)] for p in runs[0].points]
    assert [r["from_step"] for r in long] == [0, 1]  # the long run's second point continued its checkpoint
    assert long[1]["train_seconds"] > long[0]["train_seconds"]
    assert {r["data"] for r in results["rows"].values() if "data" in r} == {"images", "prompts"}
    table = _table_rows((out / "sweep.md").read_text())
    assert len(table) == len(expected)
    assert all(cell and cell != sweep.NOT_RUN for row in table for cell in row), table
    assert "not measured" not in (out / "sweep.md").read_text()
    assert (out / "sweep.md").read_text() in doc.read_text()  # the docs' block is the table
    assert "r32_images@2" in first.stdout

    second = _run(out, "--toy")
    again = json.loads((out / "sweep.json").read_text())
    assert again == results  # no row redone, no call recorded
    assert "0 unit(s) left" in second.stdout and "done earlier: r32_images@1" in second.stdout


def test_pending_units_skip_done_rows_and_continue_a_run_from_its_checkpoint():
    runs = sweep.grid()
    done = {sweep.TEACHER_ROW: {}, "r32_images@250": {}, "r32_images@500": {}, "r16_images@1000": {}}
    units = sweep.pending_units(runs, done, "all", {"r32_images": 500})
    assert [u.name for u in units] == ["r32_images@1000", "r32_images@2000", "r32_images@4000", "r64_images@1000",
                                       "r32_prompts@1000"]
    assert [(u.start, u.end) for u in units[:3]] == [(500, 1000), (1000, 2000), (2000, 4000)]
    fresh = sweep.pending_units(runs, done, "steps", {})  # a fresh machine: no checkpoint, the run restarts
    assert [(u.start, u.end) for u in fresh] == [(0, 1000), (1000, 2000), (2000, 4000)]
    assert [u.name for u in sweep.pending_units(runs, done, "data", {})] == ["r32_prompts@1000"]
    assert sweep.pending_units(runs, done, "none", {}) == []
    with pytest.raises(ValueError, match="--part"):
        sweep.pending_units(runs, done, "everything", {})


def test_the_plan_fits_each_call_and_names_what_needs_a_warm_machine():
    runs = sweep.grid()
    units = sweep.pending_units(runs, {}, "all", {})
    costs = sweep.Costs()
    calls = sweep.plan_calls(units, costs, 540)
    assert sorted(u.name for call in calls for u, _ in call) == sorted(u.name for u in units)
    assert all(costs.setup + sum(c for _, c in call) <= 540 for call in calls)
    text = sweep.estimate_text(units, costs, 540)
    assert "continues r32_images from step 2000: only on the same warm machine" in text
    too_small = sweep.estimate_text(units, costs, 100)
    assert "does not fit one call of 100 s" in too_small


def test_measured_step_time_replaces_the_estimate():
    rows = {"r32_images@500": {"device": "GPU", "segment_seconds": 75.0, "steps": 500, "from_step": 0,
                               "eval_seconds": 6.0}}
    costs = sweep.Costs().measured({"rows": rows}, "GPU")
    assert costs.step == pytest.approx((75.0 - 15.0) / 500) and costs.evaluation == 6.0
    assert sweep.Costs().measured({"rows": rows}, "other").step == sweep.Costs().step


def test_a_partial_sweep_shows_every_grid_point_and_the_docs_carry_one_table():
    runs = sweep.grid()
    row = {"accuracy": 1.0, "accuracy_classifier": 1.0, "well_formed": 0.99, "frechet": 0.3, "eval_seconds": 9.0}
    results = {"axis_steps": 1000, "rows": {sweep.TEACHER_ROW: dict(row, label=sweep.TEACHER_LABEL, frechet=0.15),
                                            "r32_images@250": dict(row, train_seconds=40.0)}}
    table = _table_rows(sweep.table_markdown(results, runs, "not run (no GPU)"))
    assert len(table) == 1 + sum(len(r.points) for r in runs)
    assert table[1][:5] == ["r32_images@250", "steps", "250", "32", "image folder"] and table[1][9] == "2.00×"
    assert sum(cells.count("not run (no GPU)") == 7 for cells in table) == len(table) - 2
    assert sweep.answers(results, runs)[1:] == ["How big: not measured.", "Data-free: not measured."]
    text = DOC.read_text()
    assert text.count(sweep.BEGIN) == 1 and text.count(sweep.END) == 1
    replaced = sweep.replace_table(text, "NEW TABLE\n")
    assert "NEW TABLE" in replaced and replaced.split(sweep.BEGIN)[0] == text.split(sweep.BEGIN)[0]
    with pytest.raises(ValueError, match="markers|pair"):
        sweep.replace_table("no markers", "x")
