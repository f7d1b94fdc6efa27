#!/usr/bin/env python3
"""Run every example workflow of the LCM-LoRA Pack headlessly and report images and timings (``make run``).

ComfyUI (the provisioned one, or ``$COMFYUI_PATH``) is booted in this process on the CPU with the pack
loaded. Each ``example_workflows/*.json`` (UI format, as users drag it in) is converted to an API prompt
against the live node catalogue, validated (any node error fails it) and executed by ComfyUI's own
executor. Images go to ``OUT/<workflow>/``, an exported LoRA next to them, and a timing table (seconds,
sampling steps, images per workflow) is logged and written to ``OUT/summary.md``. A workflow whose node types are not
registered (the IP-Adapter and AnimateLCM examples need ComfyUI_IPAdapter_plus / AnimateDiff-Evolved, which this
ComfyUI does not load) is skipped, naming the pack.

Models:
* default -- the demo family (models/demo, docs/demo_model_card.md): a small trained SD1.5-family model, its
  LCM-LoRA and a style LoRA. Per prompt a side-by-side sheet of five graphs (teacher 25 / 4 steps, LCM-LoRA
  4 steps, LCM-LoRA + style, teacher + style) with seconds and the attribute classifier's verdicts, then the
  shipped quality table: ``OUT/demo/`` (lcm_lora_pack.demo.main_job).
* ``--stand-ins`` (or ``--generated-models DIR``) -- tiny generated stand-ins written under the published file names (cached in
  ``OUT/.generated-models``), with the documented test substitution (devkit/workflows.py: the
  SDXL checkpoint loader is swapped for a tiny-SDXL loader, latents are 64 px). Images are noise: the
  weights are random; this proves the workflows run, not what they look like.
* ``--models DIR`` -- your own ComfyUI-style models folder (``DIR/checkpoints``, ``DIR/loras``, ...) holding
  the published files (see docs/workflows.md); workflows run unchanged. Missing files are listed and
  their workflow is skipped. Nothing is written into DIR (an exported LoRA is copied to OUT).

Usage::

    make run                                   # the demo family
    .venv/bin/python scripts/run_examples.py --stand-ins   # every example workflow on random stand-ins
    make run MODELS=~/ComfyUI/models           # your models
    PYTHONPATH=.pack .venv/bin/python scripts/run_examples.py --only sd15_lcm_lora_4step --out out
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lcm_lora_pack.demo import main_job as demo_main_job
from lcm_lora_pack.devkit import host as comfy_host
from lcm_lora_pack.devkit import workflows

REPO = comfy_host.REPO

LOG = logging.getLogger("run_examples")
EXPORT_NODE = "LCMPack_LoraExport"


@dataclass
class Result:
    name: str
    status: str = "ok"
    seconds: float = 0.0
    steps: str = ""
    images: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    detail: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="a ComfyUI-style models folder with the published files")
    parser.add_argument("--out", type=Path, default=REPO / "out", help="output folder (default: out/)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these workflows")
    parser.add_argument("--generated-models", type=Path,
                        help="where generated stand-in models are cached (default: OUT/.generated-models)")
    parser.add_argument("--stand-ins", action="store_true",
                        help="run every example workflow on tiny random stand-ins instead of the demo family")
    parser.add_argument("--demo-prompts", type=int, default=3, help="demo family: how many sheets (prompts)")
    return parser.parse_args(argv)


def sampling_steps(prompt: dict) -> str:
    """Sampling steps of the workflow's samplers, e.g. '4' or '4 + 25' ('-' when it samples nothing)."""
    steps = [str(node["inputs"]["steps"]) for node in prompt.values()
             if isinstance(node.get("inputs", {}).get("steps"), int)]
    return " + ".join(steps) or "-"


def missing_models(prompt: dict, folder_paths) -> list[str]:
    """Published files the prompt needs that ComfyUI cannot find (``folder/name``)."""
    missing = []
    for name in sorted(workflows.referenced_models(prompt)):
        model = workflows.PUBLISHED_MODELS[name]
        if folder_paths.get_full_path(model.folder, name) is None:
            missing.append(f"{model.folder}/{name} ({model.url})")
    return missing


def prepare_base(options: argparse.Namespace, base: Path) -> None:
    """Models, input image and (for generated models) the test-only loader, before ComfyUI boots."""
    comfy_host.make_base_directory(base)
    workflows.write_example_input(base / "input")
    if demo_mode(options):
        demo_main_job.install_models(options.out / ".demo-models")
        workflows.link_models(options.out / ".demo-models", base)
    elif options.models is None:
        cache = options.generated_models or options.out / ".generated-models"
        LOG.info("generating tiny stand-in models in %s (cached between runs)", cache)
        workflows.write_example_models(cache)
        workflows.link_models(cache, base)
        workflows.link_testkit(base)


def demo_mode(options: argparse.Namespace) -> bool:
    return options.models is None and not options.stand_ins and options.generated_models is None


def run_demo(options: argparse.Namespace) -> int:
    """The demo family's sheets (lcm_lora_pack.demo.main_job) in a freshly booted ComfyUI."""
    with tempfile.TemporaryDirectory(prefix="lcmpack-run-") as tmp:
        base = Path(tmp)
        prepare_base(options, base)
        host = comfy_host.boot(base)
        results = demo_main_job.run(host, options.out, demo_main_job.sheet.DEFAULT_PROMPTS[:options.demo_prompts])
    LOG.info("\n%s", (options.out / "demo" / "summary.md").read_text())
    LOG.info("sheets: %s/demo/sheet_*.png   summary: %s", options.out, options.out / "demo" / "summary.md")
    return 1 if demo_main_job.failed(results) else 0


def check_models_folder(models: Path) -> None:
    """Fail early (before ComfyUI boots) when ``--models`` is not a ComfyUI models folder."""
    if not models.is_dir():
        raise SystemExit(f"--models {models}: not a folder. Give a ComfyUI models folder (with checkpoints/, "
                         "loras/ inside), e.g. ~/ComfyUI/models.")
    subfolders = [p for p in models.iterdir() if p.is_dir()]
    if not any(p.name in ("checkpoints", "loras") for p in subfolders):
        raise SystemExit(f"--models {models}: no checkpoints/ or loras/ folder inside; give the folder that "
                         "holds them (ComfyUI's models/).")


def add_user_models(models: Path, folder_paths) -> None:
    subfolders = [p for p in models.iterdir() if p.is_dir()]
    for sub in subfolders:
        folder_paths.add_model_folder_path(sub.name, str(sub))


def run_one(host, name: str, object_info: dict, generated: bool, out: Path) -> Result:
    """Convert, validate, execute one workflow; copy its images (and exported LoRA) to ``out/<name>``."""
    result = Result(name)
    ui = workflows.load_ui(name)
    unregistered = sorted({n["type"] for n in ui["nodes"]} - set(object_info) - workflows.UI_ONLY_NODE_TYPES)
    if unregistered:
        packs = workflows.packs_needed(name) or ["the custom nodes defining them"]
        result.status, result.detail = "skipped", f"needs {', '.join(packs)} (node types {', '.join(unregistered)})"
        return result
    prompt = workflows.ui_to_api(ui, object_info)
    result.steps = sampling_steps(prompt)
    missing = [] if generated else missing_models(prompt, host.folder_paths)
    if missing:
        result.status, result.detail = "skipped", "missing " + ", ".join(missing)
        return result
    if generated:
        prompt = workflows.substitute_api(prompt)
    exports = [host.base / "models" / "loras" / f"{node['inputs']['filename']}.safetensors"
               for node in prompt.values() if node["class_type"] == EXPORT_NODE]
    for target in exports:
        target.unlink(missing_ok=True)  # the node never overwrites; this base folder is ours
    target_dir = out / name
    if target_dir.exists():
        LOG.info("replacing the previous results in %s", target_dir)
        shutil.rmtree(target_dir)
    start = time.perf_counter()
    try:
        outputs = host.run_prompt(prompt)
    except comfy_host.PromptFailed as error:
        result.status, result.detail = "failed", str(error)[:500]
        return result
    finally:
        result.seconds = time.perf_counter() - start
    images = [image for output in outputs.values() for image in output.get("images", [])
              if image.get("type") == "output"]
    result.images = workflows.copy_outputs(images, host.base / "output", target_dir, prefix="")
    for exported in exports:
        target_dir.mkdir(parents=True, exist_ok=True)
        result.files.append(Path(shutil.copyfile(exported, target_dir / exported.name)))
    return result


def summary_table(results: list[Result], models_label: str) -> str:
    lines = [f"# LCM-LoRA Pack examples ({models_label})", "",
             "| workflow | status | seconds | steps | images | files |", "|---|---|---:|---|---:|---|"]
    for r in results:
        files = ", ".join(p.name for p in r.files) or "-"
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.steps} | {len(r.images)} | {files} |")
    notes = [f"- {r.name}: {r.detail}" for r in results if r.detail]
    lines += ["", "Seconds are wall time of validation + execution in one process on the CPU; the first "
              "workflow also loads its models."]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    LOG.setLevel(logging.INFO)
    options.out = options.out.resolve()
    names = workflows.example_names()
    unknown = sorted(set(options.only or []) - set(names))
    if unknown:
        LOG.error("unknown workflows %s; available: %s", unknown, names)
        return 2
    if demo_mode(options):
        return run_demo(options)
    generated = options.models is None
    if not generated:
        options.models = options.models.expanduser().resolve()
        check_models_folder(options.models)
    with tempfile.TemporaryDirectory(prefix="lcmpack-run-") as tmp:
        base = Path(tmp)
        prepare_base(options, base)
        host = comfy_host.boot(base)
        if not generated:
            add_user_models(options.models, host.folder_paths)
        object_info = workflows.object_info_in_process(host.nodes)
        results = []
        for name in options.only or names:
            LOG.info("running %s ...", name)
            results.append(run_one(host, name, object_info, generated, options.out))
            LOG.info("  %s: %s in %.1f s", name, results[-1].status, results[-1].seconds)
    table = summary_table(results, "generated tiny models" if generated else f"models from {options.models}")
    write_atomic(options.out / "summary.md", table)
    LOG.info("\n%s", table)
    LOG.info("images: %s/<workflow>/   summary: %s", options.out, options.out / "summary.md")
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
