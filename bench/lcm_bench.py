"""LCM-LoRA Pack benchmark: the acceleration claim and the pack's overheads vs ComfyUI core and diffusers.

Usage (from the repository root; ``.pack`` holds the ``lcm_lora_pack`` link, see bench/host.py)::

    PYTHONPATH=.pack python -m lcm_lora_pack.bench.lcm_bench --smoke                      # CPU, tiny shapes: checks the script runs
    python -m lcm_lora_pack.bench.lcm_bench --device cuda --families sd15,sdxl --out out/bench
    python -m lcm_lora_pack.bench.lcm_bench --device cuda --sections lcm4,profile --families sd15

Sections: ``step`` (eager UNet step b1/b2, ComfyUI vs diffusers), ``lcm4`` (4-step LCM: pack nodes, core's
manual path, diffusers' pipeline, 4 × UNet step), ``profile`` (where the extra time goes), ``e2e`` (each text
encode, the decode and each sampler alone, and the graph per re-run scenario -- new seed, new prompt, cold --
LCM-LoRA 4 steps vs 25-step DPM++ 2M cfg 7.5, plus a TAESD-decoded row), ``e2ecompiled`` (the same, both UNets through
core's TorchCompileModel), ``lora`` (apply / re-apply times),
``patched`` (step time LoRA-patched vs not), ``mergeexport`` (LoraExport node: 3 LoRAs → one file),
``compile`` (TorchCompileModel), ``export`` (the mixing engineer's ``bench/bench_export.py``, when present). The tables (markdown) are printed and written to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ALL_SECTIONS = ("step", "lcm4", "profile", "e2e", "e2ecompiled", "lora", "patched", "mergeexport", "compile",
                "export")
LOG = logging.getLogger("bench")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny SD1.5-family model, 1 repeat")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default="sd15,sdxl", help="comma list of sd15, sdxl, tiny-sd15")
    parser.add_argument("--sections", default=",".join(ALL_SECTIONS), help="comma list of " + ", ".join(ALL_SECTIONS))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per arm (interleaved)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per arm first")
    parser.add_argument("--compile-families", default="sd15", help="families for the compile section")
    parser.add_argument("--compile-backends", default="inductor,cudagraphs",
                        help="TorchCompileModel backends to time (inductor, cudagraphs)")
    parser.add_argument("--e2e-compile-backend", default="cudagraphs",
                        help="TorchCompileModel backend of the e2ecompiled section")
    parser.add_argument("--e2e-batch", type=int, default=1,
                        help="images per graph in the e2e sections (1: the targets' setting)")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.families, args.repeats, args.warmup = "cpu", "tiny-sd15", 1, 0
        args.compile_families = "tiny-sd15"
    return args


def environment(device: str) -> str:
    import diffusers

    try:  # ComfyUI's root is on sys.path: the host booted it
        import comfyui_version

        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = "?"
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu"
    return (f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- device: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); Python "
            f"{platform.python_version()}\n- ComfyUI {comfy_version}; diffusers {diffusers.__version__}\n"
            f"- command: `python -m lcm_lora_pack.bench.lcm_bench {' '.join(sys.argv[1:])}`\n")


def run_section(ctx, section: str, family: str, args: argparse.Namespace) -> None:
    from . import e2e_sections, lora_sections, profile_sections, sampling_sections

    table = {
        "step": lambda: sampling_sections.section_unet_step(ctx, family),
        "lcm4": lambda: sampling_sections.section_lcm_sampling(ctx, family),
        "profile": lambda: profile_sections.section_profile(ctx, family),
        "e2e": lambda: e2e_sections.section_e2e(ctx, family),
        "e2ecompiled": lambda: e2e_sections.section_e2e(ctx, family, args.e2e_compile_backend),
        "lora": lambda: lora_sections.section_lora_apply(ctx, family),
        "patched": lambda: lora_sections.section_patched_step(ctx, family),
        "mergeexport": lambda: lora_sections.section_export_node(ctx, family),
        "compile": lambda: (e2e_sections.section_compile(ctx, family, tuple(args.compile_backends.split(",")))
                            if family in args.compile_families.split(",") else None),
    }
    table[section]()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    LOG.setLevel(logging.INFO)
    from .context import BenchContext
    from .host import boot

    host = boot(args.device)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    ctx = BenchContext(host=host, device=args.device, dtype=dtype, repeats=args.repeats, warmup=args.warmup,
                       out_dir=args.out, smoke=args.smoke, e2e_batch=args.e2e_batch)
    args.out.mkdir(parents=True, exist_ok=True)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(ALL_SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(ALL_SECTIONS)}")
    failures = 0
    families = [f for f in args.families.split(",") if f]
    for family in families:
        for section in [s for s in sections if s != "export"]:
            start = time.perf_counter()
            try:
                run_section(ctx, section, family, args)
            except Exception as error:  # noqa: BLE001  (one broken section must not lose the others)
                failures += 1
                LOG.error("section %s/%s failed:\n%s", section, family, traceback.format_exc())
                ctx.report(section, f"### {family}: {section}\n\nFAILED: {type(error).__name__}: {error}\n")
            LOG.info("section %s/%s took %.1f s", section, family, time.perf_counter() - start)
        ctx.drop_models(family)
    if "export" in sections:
        from . import lora_sections

        lora_sections.section_export(ctx)
    path = ctx.write("## LCM-LoRA Pack benchmark\n\n" + environment(args.device))
    print(f"\nBENCH TABLES WRITTEN: {path} ({len(ctx.sections)} tables, {failures} failed sections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
