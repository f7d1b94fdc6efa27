"""The distillation sweep of issue 26 (``scripts/demo_distill_sweep.py``): its grid, its time plan, its results file
and its table -- everything that needs no GPU.

The grid is the cheapest one that answers a user's three questions on the demo family, each against the
shipped recipe (``scripts/demo_distill.py``'s settings: batch 64, lr 3e-4, huber, bf16, seed 6, 2048 images):

* **how long** -- ONE run at rank 32 on the image folder, evaluated at its checkpoints 250 / 500 / 1k / 2k / 4k
  (the trainer resumes a run exactly: randomness is a function of the step, so segments make one run);
* **how big** -- ranks 16 and 64 (alpha = rank, as the shipped 32 / 32) at the axis step count (1k), against the
  long run's own 1k point;
* **is data-free enough** -- the trainer's prompts-only mode (``--prompts_file``: the teacher's own DDIM-25,
  cfg 7.5 x0 for each of the same 2048 captions) at rank 32 and the axis step count, against the image folder.

Every LoRA is scored as the shipped quality rows are (:func:`.evaluate.config_row`: LCM, 4 steps, cfg 1, the
same 512 prompts and noise seeds, accuracy under the stricter check, Fréchet against real images), beside the
teacher's 25-step DPM++ 2M reference row.

Time: a device call lasts at most 600 s, so the sweep runs in units (the teacher row; one training segment to
the next evaluation point plus its evaluation) and starts a unit only when its estimate fits the call's budget;
results are appended to ``sweep.json`` after every row and a later call continues. A segment continues from the
run's last checkpoint when it is still on the machine (a warm machine) and from step 0 otherwise.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STEP_POINTS = (250, 500, 1000, 2000, 4000)
AXIS_STEPS = 1000
TOY_POINTS = (1, 2)
TOY_AXIS = 1
TEACHER_ROW = "teacher_25"
TEACHER_LABEL = "teacher, DPM++ 2M Karras, 25 steps, cfg 7.5"
BEGIN, END = "<!-- distill-sweep:begin -->", "<!-- distill-sweep:end -->"
NOT_RUN = "not run"
# The shipped distillation (models/demo/training.json, run B on an H200): 1200 steps in 188.4 s *including* the
# checkpoint's assembly, the data and its encoding, so 0.157 s/step is an upper bound of the step alone.
SHIPPED_STEPS, SHIPPED_SECONDS = 1200, 188.4


@dataclass(frozen=True)
class Run:
    """One distillation run of the grid, evaluated at ``points`` (steps)."""

    name: str
    rank: int
    data: str            # "images" (the folder) or "prompts" (the teacher's own samples)
    points: tuple[int, ...]
    axes: tuple[str, ...]


def grid(toy: bool = False, axis_steps: int | None = None) -> tuple[Run, ...]:
    """The runs: the long rank-32 run first (its points are the step axis), then the rank and data axes."""
    points = TOY_POINTS if toy else STEP_POINTS
    axis = axis_steps or (TOY_AXIS if toy else AXIS_STEPS)
    if axis not in points:
        raise ValueError(f"--axis-steps {axis} is not a point of the long run {points}; pick one of them.")
    return (Run("r32_images", 32, "images", points, ("steps",)), Run("r16_images", 16, "images", (axis,), ("rank",)),
            Run("r64_images", 64, "images", (axis,), ("rank",)), Run("r32_prompts", 32, "prompts", (axis,), ("data",)))


def row_id(run: Run, point: int) -> str:
    return f"{run.name}@{point}"


def axes_of(run: Run, point: int, axis: int) -> str:
    """The questions a row answers (the long run's axis point is also the rank and data axes' reference)."""
    return "steps, rank, data" if run.axes == ("steps",) and point == axis else ", ".join(run.axes)


@dataclass(frozen=True)
class Unit:
    """One piece of work: the teacher row, or training ``run`` from ``start`` to ``end`` and evaluating ``end``."""

    kind: str                # "teacher" or "train"
    run: Run | None = None
    start: int = 0
    end: int = 0

    @property
    def name(self) -> str:
        return TEACHER_ROW if self.kind == "teacher" else row_id(self.run, self.end)


PARTS = ("all", "teacher", "steps", "rank", "data", "none")


def schedule(runs: tuple[Run, ...]) -> list[tuple[Run, int]]:
    """(run, point) in the order the sweep works: the long run first, its segments one after the other (only its
    last segment may have to wait for the next call, which continues it on a warm machine), then the other axes."""
    return [(run, point) for run in runs for point in run.points]


def pending_units(runs: tuple[Run, ...], rows: dict, part: str, checkpoint_steps: dict[str, int]) -> list[Unit]:
    """The units still to do for ``part``; a segment starts at the run's last done point whose checkpoint is on
    this machine (``checkpoint_steps[run.name]``), else at 0."""
    if part not in PARTS:
        raise ValueError(f"--part {part!r}: use one of {', '.join(PARTS)}.")
    if part == "none":
        return []
    units = [Unit("teacher")] if part in ("all", "teacher") and TEACHER_ROW not in rows else []
    wanted = {"all": {r.name for r in runs}, "teacher": set(), "steps": {runs[0].name},
              "rank": {r.name for r in runs if "rank" in r.axes}, "data": {r.name for r in runs if "data" in r.axes}}
    reached = dict(checkpoint_steps)
    for run, point in schedule(runs):
        if run.name not in wanted[part] or row_id(run, point) in rows:
            continue
        start = reached.get(run.name, 0)
        units.append(Unit("train", run, start if start <= point else 0, point))
        reached[run.name] = point
    return units


@dataclass
class Costs:
    """Seconds the sweep expects (estimates until measured; :meth:`measured` replaces them)."""

    setup: float = 60.0           # per call: checkpoint, data, caption table, teacher + real features
    trainer_call: float = 15.0    # per segment: the trainer loads the checkpoint and the cached encodings, writes
    encode: dict = field(default_factory=lambda: {"images": 20.0, "prompts": 40.0})  # first use in a call
    step: float = SHIPPED_SECONDS / SHIPPED_STEPS
    evaluation: float = 10.0      # per row: the LoRA applied, 512 prompts at 4 steps, classifier + check
    teacher_row: float = 15.0
    source: str = "estimate from models/demo/training.json (1200 steps in 188.4 s on an H200)"

    @classmethod
    def toy(cls) -> Costs:
        return cls(setup=20.0, trainer_call=5.0, encode={"images": 2.0, "prompts": 3.0}, step=1.0, evaluation=3.0,
                   teacher_row=5.0, source="toy estimate (CPU)")

    def unit(self, unit: Unit, encoded: set[str]) -> float:
        if unit.kind == "teacher":
            return self.teacher_row
        first = 0.0 if unit.run.data in encoded else self.encode[unit.run.data]
        return self.trainer_call + first + (unit.end - unit.start) * self.step + self.evaluation

    def measured(self, results: dict, device: str) -> Costs:
        """These costs with the step time measured on ``device`` by earlier segments of at least 100 steps
        (the slowest, overhead included), and the mean evaluation seconds."""
        rows = [r for r in results.get("rows", {}).values() if r.get("device") == device]
        steps = [(r["segment_seconds"] - self.trainer_call) / (r["steps"] - r["from_step"]) for r in rows
                 if "segment_seconds" in r and r["steps"] - r["from_step"] >= 100]
        evals = [r["eval_seconds"] for r in rows if "eval_seconds" in r and "segment_seconds" in r]
        out = Costs(**{k: v for k, v in asdict(self).items()})
        if steps:
            out.step, out.source = max(steps), f"measured on {device} by {len(steps)} segment(s)"
        if evals:
            out.evaluation = sum(evals) / len(evals)
        return out


def plan_calls(units: list[Unit], costs: Costs, budget: float) -> list[list[tuple[Unit, float]]]:
    """Greedy calls of at most ``budget`` seconds (setup included), as the script runs them on one warm machine:
    a unit that does not fit waits for the next call with the later units of its run."""
    calls, left = [], list(units)
    while left:
        used, encoded, call, skipped = costs.setup, set(), [], set()
        for unit in list(left):
            key = unit.run.name if unit.run else unit.kind
            cost = costs.unit(unit, encoded)
            if key in skipped or used + cost > budget:
                skipped.add(key)
                continue
            call.append((unit, cost))
            used += cost
            left.remove(unit)
            if unit.run:
                encoded.add(unit.run.data)
        if not call:
            break  # a unit larger than a call: reported by estimate_text
        calls.append(call)
    return calls


def estimate_text(units: list[Unit], costs: Costs, budget: float) -> str:
    """The up-front estimate: every unit's seconds, the calls it takes, the device seconds in all."""
    calls = plan_calls(units, costs, budget)
    lines = [f"estimate ({costs.source}; step {costs.step:.3f} s, setup {costs.setup:.0f} s per call, budget "
             f"{budget:.0f} s per call):"]
    total = 0.0
    for number, call in enumerate(calls, 1):
        seconds = costs.setup + sum(cost for _, cost in call)
        total += seconds
        lines.append(f"  call {number}: {seconds:.0f} s -- " + ", ".join(
            f"{u.name}{f' (from {u.start})' if u.kind == 'train' and u.start else ''} {c:.0f} s" for u, c in call))
    placed = {u for call in calls for u, _ in call}
    for unit in units:
        if unit not in placed:
            lines.append(f"  {unit.name}: ~{costs.unit(unit, set()):.0f} s does not fit one call of {budget:.0f} s; "
                         "it needs the run's checkpoint from an earlier call on the same (warm) machine")
    for number, call in enumerate(calls[1:], 2):
        for unit, _ in call:
            earlier = [u for c in calls[:number - 1] for u, _ in c if u.run == unit.run]
            if unit.kind == "train" and unit.start and earlier:
                fresh = costs.unit(Unit("train", unit.run, 0, unit.end), set())
                lines.append(f"  call {number} continues {unit.run.name} from step {unit.start}: only on the same warm "
                             f"machine (its checkpoint); on a fresh one it starts from step 0, ~{fresh:.0f} s")
    lines.append(f"  in all: {len(calls)} call(s), ~{total:.0f} s of device time (plus each machine's start)")
    return "\n".join(lines)


# -- results ------------------------------------------------------------------------------------------------------
def new_results(settings: dict, count: int, seed: int, toy: bool, axis: int) -> dict:
    return {"version": 1, "settings": settings, "count": count, "seed": seed, "toy": toy, "axis_steps": axis,
            "calls": [], "rows": {}}


def load_results(path: Path, settings: dict, count: int, seed: int, toy: bool, axis: int) -> dict:
    """``path``'s results when they were made with the same settings (a later call continues them), else new
    ones; results of other settings are refused rather than mixed."""
    fresh = new_results(settings, count, seed, toy, axis)
    if not path.is_file():
        return fresh
    old = json.loads(path.read_text())
    for key in ("settings", "count", "seed", "toy", "axis_steps"):
        if old.get(key) != fresh[key]:
            raise ValueError(f"{path} holds a sweep with another {key} ({old.get(key)!r} != {fresh[key]!r}); give "
                             "another --out, or delete it to start anew.")
    return old


def save_results(results: dict, path: Path) -> None:
    """Atomic write (a call stopped at its limit keeps every finished row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


# -- the table ----------------------------------------------------------------------------------------------------
def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _cells(row: dict | None, teacher: dict | None, note: str) -> list[str]:
    if row is None:
        return [note] * 7
    ratio = (_num(row["frechet"] / teacher["frechet"], 2) + "×") if teacher and teacher.get("frechet") else "-"
    train = (f"{row['train_seconds']:.0f}" if "train_seconds" in row else "n/a (teacher)")
    return [_num(row["accuracy"]), _num(row["accuracy_classifier"]), _num(row["well_formed"]),
            _num(row["frechet"]), ratio, train, f"{row['eval_seconds']:.1f}"]


HEADER = ("| grid point | answers | steps | rank | data | accuracy | classifier only | well formed | Fréchet | "
          "÷ teacher 25-step | training s | evaluation s |")


def table_markdown(results: dict, runs: tuple[Run, ...], note: str = NOT_RUN) -> str:
    """One row per grid point (and the teacher's reference row first); ``note`` fills a point not measured."""
    rows, axis = results.get("rows", {}), results.get("axis_steps", AXIS_STEPS)
    teacher = rows.get(TEACHER_ROW)
    lines = [HEADER, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| {teacher['label'] if teacher else TEACHER_LABEL} | reference | - | - | - | "
             + " | ".join(_cells(teacher, teacher, note)) + " |"]
    for run, point in sorted(((r, p) for r in runs for p in r.points), key=lambda rp: (rp[0] is not runs[0], rp[1])):
        data = "image folder" if run.data == "images" else "prompts only (teacher's samples)"
        lines.append(f"| {row_id(run, point)} | {axes_of(run, point, axis)} | {point} | {run.rank} | {data} | "
                     + " | ".join(_cells(rows.get(row_id(run, point)), teacher, note)) + " |")
    return "\n".join(lines) + "\n"


def answers(results: dict, runs: tuple[Run, ...]) -> list[str]:
    """The three answers in words, from measured rows only (``not measured`` otherwise)."""
    rows, axis = results.get("rows", {}), results.get("axis_steps", AXIS_STEPS)
    teacher = rows.get(TEACHER_ROW)
    long = [(p, rows.get(row_id(runs[0], p))) for p in runs[0].points]
    out = []
    if teacher and any(r for _, r in long):
        good = [(p, r) for p, r in long if r and r["frechet"] <= 1.5 * teacher["frechet"]
                and r["accuracy"] >= 0.95 * teacher["accuracy"]]
        out.append("How long: " + (f"{good[0][0]} steps ({good[0][1]['train_seconds']:.0f} s of training) first reach "
                                   "accuracy >= 0.95 x and Fréchet <= 1.5 x the teacher's 25-step" if good else
                                   f"no measured step count up to {max(p for p, r in long if r)} reaches accuracy >= "
                                   "0.95 x and Fréchet <= 1.5 x the teacher's 25-step") + ".")
    else:
        out.append("How long: not measured.")
    ranks = {r.rank: rows.get(row_id(r, axis)) for r in runs if r.data == "images" and axis in r.points}
    if all(ranks.values()):
        out.append(f"How big (at {axis} steps): Fréchet " + ", ".join(
            f"rank {k} {v['frechet']:.3f}" for k, v in sorted(ranks.items())) + ".")
    else:
        out.append("How big: not measured.")
    images, prompts = rows.get(row_id(runs[0], axis)), rows.get(row_id(runs[-1], axis))
    if images and prompts:
        out.append(f"Data-free (at {axis} steps, rank 32): prompts only {prompts['accuracy']:.3f} accuracy, Fréchet "
                   f"{prompts['frechet']:.3f}; image folder {images['accuracy']:.3f}, {images['frechet']:.3f}.")
    else:
        out.append("Data-free: not measured.")
    return out


def replace_table(text: str, block: str) -> str:
    """``text`` with everything between the sweep markers replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the document needs exactly one {BEGIN} ... {END} pair around the sweep table.")
    head, rest = text.split(BEGIN)
    return head + BEGIN + "\n" + block.rstrip("\n") + "\n" + END + rest.split(END, 1)[1]
