"""Sections: LoRA apply / re-apply time (pack vs chained core loaders), patched step time, merged export.

"Apply" is what the user waits for after changing a LoRA input: the loader node(s) run, then ComfyUI
patches the weights when the model is loaded for sampling (``load_models_gpu``; patches are merged into
the weights there, see the shared notes §3). Each timed apply starts from the unpatched model loaded.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from lcm_lora_pack.devkit.host import subprocess_env

from . import timing
from .context import BenchContext, FamilyModels
from .host import REPO, NodeMissing
from .lora_files import write_benchmark_loras
from .sampling_sections import parity, unet_step_arms

APPLY_FUNCTIONS = (
    ("lora/io.py", "read_lora_file"), ("lora/io.py", "_sha256"), ("lora/io.py", "read_tensors"),
    ("lora/formats.py", "parse_modules"), ("lora/resolve.py", "resolve"), ("host/comfy_apply.py", "build_patches"),
    ("comfy/utils.py", "load_torch_file"), ("comfy/lora.py", "load_lora"), ("comfy/lora.py", "model_lora_keys_unet"),
    ("model_patcher.py", "add_patches"), ("model_management.py", "load_models_gpu"),
    ("model_patcher.py", "patch_weight_to_device"), ("model_patcher.py", "unpatch_model"),
)
EXPORT_FUNCTIONS = (
    ("host/comfy_apply.py", "plan_stack"), ("lora/io.py", "read_lora_file"), ("lora/io.py", "_sha256"),
    ("lora/export.py", "build_export"), ("lora/mix.py", "concat_mix"), ("lora/svd.py", "reduce_modules"),
    ("lora/svd.py", "core_svd"), ("lora/export.py", "measure_concat"), ("lora/batched.py", "difference_norms_sq"),
    ("lora/export.py", "module_tensors"), ("lora/safe_write.py", "atomic_save_safetensors"),
    ("safetensors/torch.py", "save_file"),
)

LOG = logging.getLogger(__name__)
STYLE_STRENGTH = 0.8


def benchmark_loras(ctx: BenchContext, models: FamilyModels) -> dict[str, str]:
    return write_benchmark_loras(models.unet.diffusers, ctx.host.loras_dir, models.family.name, ctx.device)


def pack_lcm_lora(ctx: BenchContext, model, clip, lora_name: str, strength: float = 1.0):
    """The pack's LCM-LoRA loader (MODEL out)."""
    return ctx.host.call("LCMPack_LCMLoraLoader", model=model, clip=clip, lora_name=lora_name, strength=strength)[0]


def core_lora_chain(ctx: BenchContext, model, names: list[str], strengths: list[float]):
    """Core ``LoraLoaderModelOnly`` chained once per file."""
    for name, strength in zip(names, strengths, strict=True):
        (model,) = ctx.host.call("LoraLoaderModelOnly", model=model, lora_name=name, strength_model=strength)
    return model


def pack_stack(ctx: BenchContext, names: list[str], strengths: list[float]):
    """``LCMPack_LoraStack`` chained once per file; the first file is the accelerator (LCM-LoRA)."""
    ctx.host.require("LCMPack_LoraStack")
    stack = None
    for index, (name, strength) in enumerate(zip(names, strengths, strict=True)):
        provided = {"lora_name": name, "weight": strength, "role": "accelerator" if index == 0 else "style"}
        if stack is not None:
            provided["stack"] = stack
        (stack,) = ctx.host.call("LCMPack_LoraStack", **provided)[:1]
    return stack


def pack_mix(ctx: BenchContext, model, clip, names: list[str], strengths: list[float]):
    """``LCMPack_LoraStack`` ×n, then ``LCMPack_LoraMixer`` (MODEL out)."""
    ctx.host.require("LCMPack_LoraMixer")
    stack = pack_stack(ctx, names, strengths)
    return ctx.host.call("LCMPack_LoraMixer", model=model, clip=clip, stack=stack)[0]


def _apply_repeats(ctx: BenchContext) -> int:
    """Applies take seconds each (SDXL): 4 interleaved rounds, 1 in the smoke run."""
    return min(ctx.short_repeats, 4)


def _loader(ctx: BenchContext):
    import comfy.model_management

    def load(model):
        comfy.model_management.load_models_gpu([model])
        timing.synchronize(ctx.device)
        return model

    return load


def section_lora_apply(ctx: BenchContext, family_name: str) -> None:
    models = ctx.models(family_name)
    names = benchmark_loras(ctx, models)
    base = models.fresh_comfy_unet()
    load = _loader(ctx)
    all_names = [names["lcm"], names["style_a"], names["style_b"]]
    strengths = [1.0, STYLE_STRENGTH, STYLE_STRENGTH]
    changed = [1.0, STYLE_STRENGTH, STYLE_STRENGTH - 0.1]
    arms = {
        "core LoraLoaderModelOnly: LCM alone": lambda: load(core_lora_chain(ctx, base, all_names[:1], [1.0])),
        "core LoraLoaderModelOnly ×3 chained: LCM + 2 style": lambda: load(
            core_lora_chain(ctx, base, all_names, strengths)),
    }
    skipped = {}
    for name, fn in {
        "pack LCMLoraLoader: LCM alone": lambda: load(pack_lcm_lora(ctx, base, None, names["lcm"])),
        "pack LoraStack ×3 → LoraMixer: LCM + 2 style": lambda: load(pack_mix(ctx, base, None, all_names, strengths)),
    }.items():
        node = "LCMPack_LCMLoraLoader" if "LCMLoraLoader" in name else "LCMPack_LoraMixer"
        if ctx.host.has(node):
            arms[name] = fn
        else:
            skipped[name] = f"{node} not registered: skipped"
    setups = {name: (lambda: load(base)) for name in arms}
    results = timing.interleave(arms, ctx.device, _apply_repeats(ctx), min(ctx.warmup, 1), peak=False, setups=setups)
    reapply = _reapply_arms(ctx, base, all_names, strengths, changed, load)
    results.update(reapply)
    for name, reason in skipped.items():
        results[name] = timing.ArmResult(name, skipped=reason)
    from .profile_sections import cprofile_breakdown

    breakdown = cprofile_breakdown(ctx, f"apply_{family_name}", arms, APPLY_FUNCTIONS, setups=setups)
    ctx.report("lora_apply", timing.table(
        f"{family_name}: LoRA apply (loader nodes + weight patch at load), from the unpatched model loaded",
        results, reference="core LoraLoaderModelOnly: LCM alone") + "\n" + breakdown,
        {"family": family_name, **{k: v.seconds for k, v in results.items()}})


def _reapply_arms(ctx, base, names, strengths, changed, load) -> dict[str, timing.ArmResult]:
    """Re-apply after one style strength changes: from the model patched with ``strengths``."""
    arms, setups = {}, {}
    builders = {"core ×3 chained": lambda s: core_lora_chain(ctx, base, names, s)}
    if ctx.host.has("LCMPack_LoraMixer"):
        builders["pack mixer"] = lambda s: pack_mix(ctx, base, None, names, s)
    for label, build in builders.items():
        before = {"model": None}

        def setup(build=build, before=before):
            before["model"] = load(build(strengths))

        arms[f"re-apply after a strength change: {label}"] = lambda build=build: load(build(changed))
        setups[f"re-apply after a strength change: {label}"] = setup
    try:
        return timing.interleave(arms, ctx.device, _apply_repeats(ctx), min(ctx.warmup, 1), peak=False,
                                 setups=setups)
    except NodeMissing as missing:
        return {"re-apply": timing.ArmResult("re-apply", skipped=str(missing))}


def section_patched_step(ctx: BenchContext, family_name: str) -> None:
    """UNet step of the LCM-LoRA-patched model vs the unpatched one (two loaded copies, interleaved)."""
    models = ctx.models(family_name)
    names = benchmark_loras(ctx, models)
    patched_base = models.fresh_comfy_unet()
    if ctx.host.has("LCMPack_LCMLoraLoader"):
        patched, how = pack_lcm_lora(ctx, patched_base, None, names["lcm"]), "pack LCMLoraLoader"
    else:
        patched, how = core_lora_chain(ctx, patched_base, [names["lcm"]], [1.0]), "core LoraLoaderModelOnly"
    results = {}
    for batch in (1, 2):
        plain_step, _ = unet_step_arms(ctx, models, batch)
        patched_models = FamilyModels(models.family, type(models.unet)(models.unet.diffusers, patched, 0), {})
        patched_step, _ = unet_step_arms(ctx, patched_models, batch)
        changed = parity(plain_step, patched_step)
        results.update(timing.interleave({f"unpatched b{batch}": plain_step,
                                          f"LCM-LoRA patched ({how}) b{batch}": patched_step},
                                         ctx.device, ctx.repeats * 2, ctx.warmup, peak=False))
        LOG.info("patched output differs from unpatched by %.2e (rel. L2): the LoRA is applied", changed)
    ctx.report("patched_step", timing.table(f"{family_name}: UNet step, LCM-LoRA patched vs unpatched",
                                            results, reference="unpatched b1"),
               {"family": family_name, **{k: v.seconds for k, v in results.items()}})


def section_export_node(ctx: BenchContext, family_name: str) -> None:
    """``LCMPack_LoraExport``: LCM + 2 style LoRAs merged into one file, svd to rank 64 and concat."""
    models = ctx.models(family_name)
    if not ctx.host.has("LCMPack_LoraExport"):
        ctx.report("export", f"### {family_name}: merged export\n\nSKIPPED: LCMPack_LoraExport not registered\n")
        return
    names = benchmark_loras(ctx, models)
    stack = pack_stack(ctx, [names["lcm"], names["style_a"], names["style_b"]], [1.0, STYLE_STRENGTH, STYLE_STRENGTH])
    arms = {f"LoraExport {mode}{' rank 64' if mode == 'svd' else ''}: LCM + 2 style → 1 file": (
        lambda mode=mode: ctx.host.call("LCMPack_LoraExport", model=models.unet.comfy, stack=stack,
                                        filename=f"bench-export-{family_name}-{mode}", mode=mode, rank=64,
                                        overwrite=True, save_dtype="fp16")) for mode in ("svd", "concat")}
    results = timing.interleave(arms, ctx.device, ctx.short_repeats, 1 if not ctx.smoke else 0)
    from .profile_sections import cprofile_breakdown

    breakdown = cprofile_breakdown(ctx, f"export_{family_name}", arms, EXPORT_FUNCTIONS)
    ctx.report("export", timing.table(f"{family_name}: merged export (LoraExport node, fp16 file written)", results)
               + "\n" + breakdown, {"family": family_name, **{k: v.seconds for k, v in results.items()}})


def section_export(ctx: BenchContext) -> None:
    """Run the mixing engineer's ``bench/bench_export.py`` (merged export timing) and keep its output."""
    script = REPO / "bench" / "bench_export.py"
    if not script.is_file():
        ctx.report("export", "### merged export\n\nskipped: bench/bench_export.py not present (wt-mix not merged)\n")
        return
    device = "cuda" if ctx.device.startswith("cuda") else "cpu"
    args = [sys.executable, str(script), "--device", device, "--json", str(Path(ctx.out_dir) / "bench_export.json")]
    if ctx.smoke:
        args.append("--smoke")
    run = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=900, env=subprocess_env())
    tail = (run.stdout[-4000:] + ("\n" + run.stderr[-2000:] if run.returncode else "")).strip()
    ctx.report("export", f"### merged export (bench/bench_export.py, rc {run.returncode})\n\n```\n{tail}\n```\n",
               {"returncode": run.returncode})
