#!/usr/bin/env python3
"""Distillation, measured for users (issue 26): quality against steps, rank and data mode, with wall time.

The grid (``demo/sweep.py``): ONE rank-32 run on the image folder evaluated at its checkpoints 250 / 500 / 1k /
2k / 4k; ranks 16 and 64 at 1k; the trainer's prompts-only mode (the teacher's own samples of the same 2048
captions) at rank 32, 1k; and the teacher's 25-step reference row. Each LoRA is distilled by the pack's trainer
(``python -m lcm_lora_pack.distill``, run in this process through its ``cli.run``) with the shipped recipe
(``scripts/demo_distill.py``'s settings) and scored as the shipped quality rows are (LCM 4 steps, cfg 1, 512
prompts, seed 13: accuracy under the stricter check, Fréchet against real images).

A device call lasts at most 600 s: the sweep prints its estimate, starts a unit (a training segment and its
evaluation) only when it fits ``--budget-seconds``, appends every row to ``OUT/sweep.json`` and a later call with
the same ``--out`` continues (on the same warm machine from the run's checkpoint in ``--work``, else from step
0). ``OUT/sweep.md`` is the table; ``--write-docs docs/distill.md`` puts it between the sweep markers there.

Usage::

    python scripts/demo_distill_sweep.py --out OUT --embeddings E.safetensors [--part all] [--budget-seconds 540]
    python scripts/demo_distill_sweep.py --out OUT --part none --write-docs docs/distill.md   # table only
    python scripts/demo_distill_sweep.py --out OUT --toy          # every part in seconds on the CPU
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import demo_distill  # the sibling script: the shipped recipe and its data
import torch
from lcm_lora_pack.demo import comfy_env, evaluate, files, sweep, world

LOG = logging.getLogger("demo_distill_sweep")
RECIPE = {k: v for k, v in demo_distill.SETTINGS.items() if k not in ("max_train_steps", "lora_rank", "lora_alpha")}
TOY_RECIPE = dict(RECIPE, resolution=64, train_batch_size=1, mixed_precision="no")
TEACHER_SAMPLING_STEPS = {"full": 25, "toy": 1}  # prompts-only mode: the trainer's default 25 (toy: 1)
CONFIGS = {c.name: c for c in evaluate.CONFIGS}
# --toy samples one step (the rows' code at a fraction of their CPU time)
TOY_CONFIGS = {"teacher_25": replace(CONFIGS["teacher_25"], steps=1, label="teacher, DPM++ 2M Karras, 1 step (toy)"),
               "lcm_4": replace(CONFIGS["lcm_4"], steps=1, label="LCM-LoRA, LCM, 1 step (toy)")}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="sweep.json (read and continued) and sweep.md")
    parser.add_argument("--folder", type=Path, default=files.SHIPPED, help="folder with the teacher and classifier")
    parser.add_argument("--work", type=Path, help="checkpoint, data, runs (default OUT/work; keep it between calls)")
    parser.add_argument("--checkpoint", type=Path, help="the assembled demo checkpoint (default: made in --work)")
    parser.add_argument("--embeddings", type=Path, help="caption table (demo_train.py --stages captions; default: "
                        "the rows the evaluation reads, encoded by the checkpoint's CLIP)")
    parser.add_argument("--part", default="all", choices=sweep.PARTS, help="which axis ('none': the table only)")
    parser.add_argument("--budget-seconds", type=float, default=540.0, help="start no unit that would end later")
    parser.add_argument("--axis-steps", type=int, help="steps of the rank and data axes (default 1000; toy 1)")
    parser.add_argument("--count", type=int, help="prompts per row (default 512; toy 2)")
    parser.add_argument("--seed", type=int, default=13, help="the quality rows' seed")
    parser.add_argument("--images", type=int, help="training images / prompts (default 2048; toy 4)")
    parser.add_argument("--toy", action="store_true", help="tiny sizes: every part in seconds on the CPU")
    parser.add_argument("--write-docs", type=Path, help="replace the table between the sweep markers of this file")
    parser.add_argument("--note", default=sweep.NOT_RUN, help="what a grid point not measured says in the table")
    options = parser.parse_args(argv)
    options.count = options.count or (2 if options.toy else 512)
    options.images = options.images or (4 if options.toy else 2048)
    options.work = options.work or options.out / "work"
    return options


def settings_of(options) -> dict:
    mode = "toy" if options.toy else "full"
    return {"recipe": TOY_RECIPE if options.toy else RECIPE, "images": options.images,
            "teacher_sampling_steps": TEACHER_SAMPLING_STEPS[mode], "checkpointing_steps": 1 if options.toy else 250}


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def checkpoint_steps(work: Path, runs) -> dict[str, int]:
    """The newest training checkpoint of each run on this machine (a warm machine keeps them between calls)."""
    from lcm_lora_pack.distill.checkpoints import list_checkpoints

    found = {run.name: list_checkpoints(work / "runs" / run.name) for run in runs}
    return {name: items[-1][0] for name, items in found.items() if items}


@dataclass
class Context:
    """What every unit of a call shares: the trainer's inputs and the evaluation's fixed parts."""

    checkpoint: Path
    data: Path
    prompts: Path
    teacher: object
    vae: object
    classifier: object
    embeddings: torch.Tensor
    labels: torch.Tensor
    reference: torch.Tensor


def needed_embeddings(checkpoint: Path, labels: torch.Tensor) -> torch.Tensor:
    """The caption table with the rows the evaluation reads (the empty caption and each prompt's), encoded by core
    ``CLIPTextEncode`` on the checkpoint's CLIP; the other rows stay zero (never read)."""
    import comfy.sd

    clip = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=False, output_clip=True)[1]
    captions = world.all_captions()
    table = torch.zeros(len(captions), 77, 768)
    for index in sorted({0, *world.caption_index(labels).tolist()}):
        table[index] = comfy_env.clip_text_encode(clip, captions[index])[0].float().cpu()
    return table


def setup(options, settings: dict, device: torch.device) -> Context:
    """The checkpoint (assembled once per machine), the data (images + captions, and the same captions as a
    prompts file), the teacher, classifier and caption table, the prompts and their real-image features."""
    work = options.work
    checkpoint = options.checkpoint or work / files.CHECKPOINT
    if not checkpoint.is_file():
        files.assemble_checkpoint(checkpoint, options.folder)
    data, done = work / "data", work / "data.complete"
    if not done.is_file():
        shutil.rmtree(data, ignore_errors=True)
        demo_distill.write_data(data, settings["images"])
        done.write_text(str(settings["images"]))
    prompts = work / "prompts.txt"
    prompts.write_text("".join(path.read_text() for path in sorted(data.glob("*.txt"))))  # same captions, same order
    models, vae = evaluate.load_models(files.shipped(files.UNET_VAE, options.folder), None, None)
    classifier = files.load_classifier(options.folder).to(device)
    labels = world.random_labels(options.count, torch.Generator().manual_seed(options.seed), styled=False)
    _, real_features = evaluate.real_rows(classifier, labels, options.seed)
    embeddings = (files.caption_embeddings(options.embeddings) if options.embeddings
                  else needed_embeddings(checkpoint, labels))
    return Context(checkpoint, data, prompts, models["teacher"], vae, classifier, embeddings, labels,
                   real_features[False])


def trainer_argv(options, settings: dict, context: Context, unit: sweep.Unit) -> list[str]:
    """``python -m lcm_lora_pack.distill`` arguments of one segment: the shipped recipe at the run's rank
    (alpha = rank), up to ``unit.end`` steps, resumed from the run's latest checkpoint when ``unit.start`` > 0."""
    run, work = unit.run, options.work
    source = ["--data_dir", str(context.data)] if run.data == "images" else ["--prompts_file", str(context.prompts)]
    argv = ["--checkpoint", str(context.checkpoint), *source, "--output", f"sweep_{run.name}_s{unit.end}",
            "--loras_dir", str(work / "loras"), "--output_dir", str(work / "runs" / run.name),
            "--cache_dir", str(work / "cache"), "--overwrite", "--comfyui_path", str(comfy_env.comfyui_root()),
            "--checkpointing_steps", str(settings["checkpointing_steps"]), "--checkpoints_total_limit", "2",
            "--max_train_steps", str(unit.end), "--lora_rank", str(run.rank), "--lora_alpha", str(float(run.rank)),
            "--teacher_sampling_steps", str(settings["teacher_sampling_steps"])]
    for name, value in settings["recipe"].items():
        argv += [f"--{name}", str(value)]
    return argv + (["--resume_from_checkpoint", "latest"] if unit.start else [])


def free_models() -> None:
    import comfy.model_management as mm

    mm.unload_all_models()
    mm.soft_empty_cache()


@torch.no_grad()
def score(context: Context, options, config_name: str, lora: Path | None) -> tuple[dict, float]:
    """The quality row of the teacher (``lora`` None) or of the teacher + ``lora`` (the pack's loader), as
    ``scripts/demo_evaluate.py`` scores it; and its seconds (LoRA applied, images, scoring)."""
    from lcm_lora_pack.host.comfy_apply import apply_lora
    from lcm_lora_pack.lora.io import read_lora_file

    config = (TOY_CONFIGS if options.toy else CONFIGS)[config_name]
    start = time.perf_counter()
    models = {"teacher": context.teacher}
    if lora is not None:
        models["lcm"] = apply_lora(context.teacher, None, read_lora_file(lora)).model
    row = evaluate.config_row(models, context.vae, context.embeddings, context.classifier, context.labels,
                              config, options.seed, context.reference)
    seconds = time.perf_counter() - start
    return {"label": row["label"], "accuracy": row["accuracy"]["joint"],
            "accuracy_classifier": row["accuracy"]["joint_classifier"], "accuracy_detail": row["accuracy"],
            "well_formed": row["well_formed"], "iou_median": row["iou_median"], "frechet": row["frechet"],
            "sampling_seconds": row["seconds"], "eval_seconds": round(seconds, 2)}, seconds


def train_unit(options, settings: dict, context: Context, unit: sweep.Unit, rows: dict) -> dict:
    """Train one segment through the trainer's command line (in this process), then score its LoRA."""
    from lcm_lora_pack.distill import cli

    run = unit.run
    if not unit.start:
        shutil.rmtree(options.work / "runs" / run.name, ignore_errors=True)  # a run restarted from step 0
    (options.work / "loras").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = cli.run(trainer_argv(options, settings, context, unit))
    segment = time.perf_counter() - start
    free_models()
    earlier = rows.get(sweep.row_id(run, unit.start)) if unit.start else None
    row, _ = score(context, options, "lcm_4", Path(summary["output"]))
    losses = summary["losses"]
    row.update(run=run.name, rank=run.rank, data=run.data, steps=unit.end, from_step=unit.start,
               segment_seconds=round(segment, 1),
               train_seconds=round(segment + (earlier["train_seconds"] if earlier else 0.0), 1),
               final_loss=sum(losses[-50:]) / max(1, len(losses[-50:])), lora_bytes=Path(summary["output"]).stat().st_size)
    if unit.start and earlier is None:
        row["train_seconds_from"] = unit.start  # continued from a checkpoint whose own time is not in the results
    return row


def run_units(options, results: dict, units: list[sweep.Unit], costs: sweep.Costs, began: float) -> None:
    """Set up, then every unit whose estimate fits the budget (a skipped unit skips its run's later ones)."""
    device = comfy_env.start_script(options.out)
    if options.toy:  # ComfyUI's --fp32-text-enc: on a CPU its default fp16 text encoder takes seconds per caption
        from comfy.cli_args import args

        args.fp32_text_enc = True
    settings = settings_of(options)
    call = {"call": len(results["calls"]) + 1, "device": device_name(), "torch": torch.__version__,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_seconds": options.budget_seconds,
            "done": [], "skipped": []}
    results["calls"].append(call)
    start = time.perf_counter()
    context = setup(options, settings, device)
    call["setup_seconds"] = round(time.perf_counter() - start, 1)
    encoded, skipped = set(), set()
    for unit in units:
        key = unit.run.name if unit.run else unit.kind
        cost = costs.unit(unit, encoded)
        if key in skipped or time.monotonic() - began + cost > options.budget_seconds:
            skipped.add(key)
            call["skipped"].append(unit.name)
            LOG.info("not in this call: %s (~%.0f s)", unit.name, cost)
            continue
        LOG.info("%s (estimate %.0f s)", unit.name, cost)
        if unit.kind == "teacher":
            row = score(context, options, sweep.TEACHER_ROW, None)[0]
        else:
            row = train_unit(options, settings, context, unit, results["rows"])
            encoded.add(unit.run.data)
        row.update(device=call["device"], call=call["call"])
        results["rows"][unit.name] = row
        call["done"].append(unit.name)
        sweep.save_results(results, options.out / "sweep.json")
        write_tables(options, results)
        LOG.info("%s: accuracy %.3f, Fréchet %.3f", unit.name, row["accuracy"], row["frechet"])
    call["seconds"] = round(time.monotonic() - began, 1)
    sweep.save_results(results, options.out / "sweep.json")


def report(options, results: dict) -> str:
    """The table with its caption and the three answers (markdown)."""
    runs = sweep.grid(options.toy, results["axis_steps"])
    devices = sorted({c["device"] for c in results["calls"]}) or ["-"]
    recipe = results["settings"]["recipe"]
    head = (f"Demo family, `scripts/demo_distill_sweep.py`{' --toy' if options.toy else ''}: the pack's trainer with "
            f"the shipped recipe (batch {recipe['train_batch_size']}, lr {recipe['learning_rate']}, "
            f"{recipe['loss_type']}, {recipe['mixed_precision']}, alpha = rank, {results['settings']['images']} "
            f"images or their captions as prompts); each LoRA at LCM 4 steps, cfg 1 on {results['count']} prompts "
            f"(seed {results['seed']}), as the shipped quality rows. Accuracy: the stricter check; Fréchet: "
            "classifier features against real images of the same prompts. Training s: the trainer's wall time from "
            "step 0 (loading, encoding the data -- for prompts only, the teacher sampling it -- and the steps); "
            f"evaluation s: LoRA applied, images, scoring. Device: {', '.join(devices)}.")
    body = sweep.table_markdown(results, runs, options.note)
    return head + "\n\n" + body + "\n" + "\n".join(f"- {line}" for line in sweep.answers(results, runs)) + "\n"


def write_tables(options, results: dict) -> None:
    text = report(options, results)
    (options.out / "sweep.md").write_text(text)
    if options.write_docs:
        options.write_docs.write_text(sweep.replace_table(options.write_docs.read_text(), text))


def main(argv=None) -> int:
    began = time.monotonic()
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    options.out.mkdir(parents=True, exist_ok=True)
    runs = sweep.grid(options.toy, options.axis_steps)
    axis = options.axis_steps or (sweep.TOY_AXIS if options.toy else sweep.AXIS_STEPS)
    results = sweep.load_results(options.out / "sweep.json", settings_of(options), options.count, options.seed,
                                 options.toy, axis)
    on_machine = checkpoint_steps(options.work, runs)
    units = sweep.pending_units(runs, results["rows"], options.part, on_machine)
    costs = (sweep.Costs.toy() if options.toy else sweep.Costs()).measured(results, device_name())
    planned = units or sweep.pending_units(runs, results["rows"], "all", on_machine)  # --part none: all's plan
    LOG.info("%s", sweep.estimate_text(planned, costs, options.budget_seconds))
    for name in results["rows"]:
        LOG.info("done earlier: %s", name)
    if units:
        run_units(options, results, units, costs, began)
    write_tables(options, results)
    left = sweep.pending_units(runs, results["rows"], options.part, {})
    LOG.info("%d unit(s) left%s", len(left), ": run the same command again" if left else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
