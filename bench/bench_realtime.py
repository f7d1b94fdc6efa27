"""Real-time LCM benchmark: the pack's fast path (LCMPack_LCMFastPath, LCMPack_FastVAEDecode) vs eager ComfyUI and
core's TorchCompileModel, same process, interleaved, same weights.

Usage (repository root)::

    PYTHONPATH=.pack python -m lcm_lora_pack.bench.bench_realtime --smoke                     # CPU, tiny model, the CPU stand-in for the graph
    PYTHONPATH=.pack python -m lcm_lora_pack.bench.bench_realtime --device cuda --families sd15,sdxl --batches 1,4 --out out/realtime

Per family and batch: 4-step LCM sampling (``KSamplerLCM`` node calls, cfg 1) eager, with core's
``TorchCompileModel`` (backends of ``--core-backends``), and with the fast path in each mode of ``--modes``;
sampling + full SD VAE decode (``VAEDecode`` / ``LCMPack_FastVAEDecode``); every arm on its own copy of the UNet
weights (no re-load between interleaved arms). Reported next to the times: the first call (capture / compile)
of each arm, the latent's and image's difference to eager (max |Δ|, relative L2), and the capture events. The
``lora`` part applies a generated LCM-LoRA through ``LCMPack_LCMLoraLoader`` at strength 1.0, then 0.8, and
times the first call after the change (ComfyUI re-patches, the fast path re-captures) and the steady calls.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

import torch

from . import synthetic, timing
from .context import BenchContext
from .lcm_bench import environment

LOG = logging.getLogger("bench.realtime")
SEED = 42
STEPS = 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny SD1.5-family model, 1 repeat")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--jobs", default="sd15:1,sdxl:1,sd15:4,sdxl:4",
                        help="family:batch list, run in this order (a family's models are rebuilt when it returns)")
    parser.add_argument("--modes", default="cuda_graph,compile_cuda_graph", help="fast path modes to time")
    parser.add_argument("--core-backends", default="cudagraphs", help="TorchCompileModel backends (or empty)")
    parser.add_argument("--decode-families", default="sd15", help="families with the sampling + decode rows")
    parser.add_argument("--lora-family", default="sd15", help="family of the LoRA re-capture part ('' = skip)")
    parser.add_argument("--profile-host", type=int, default=0, metavar="N",
                        help="cProfile N calls of each fast-path arm after timing (where the host work goes)")
    parser.add_argument("--profile-kernels", default="", metavar="VARIANTS",
                        help="per-kernel profile of each job (bench/kernel_sections.py): variants, comma-separated, "
                             "of baseline,sdpa-flash,sdpa-efficient,sdpa-math,channels_last,bf16,max-autotune, or all")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/realtime"))
    args = parser.parse_args(argv)
    if args.profile_kernels:
        from .kernel_sections import parse_variants

        parse_variants(args.profile_kernels)  # an unknown variant fails here, not after the timings
    if args.smoke:
        args.device, args.jobs, args.repeats, args.warmup = "cpu", "tiny-sd15:1", 1, 0
        args.modes, args.core_backends, args.decode_families, args.lora_family = "cuda_graph", "", "tiny-sd15", ""
    return args


def pack(name: str):
    """A pack module of the ComfyUI contract layer, ``lcm_lora_pack.host.<name>`` (run the bench with
    ``PYTHONPATH=.pack``)."""
    return importlib.import_module(f"lcm_lora_pack.host.{name}")


class Family:
    """One family's models for the bench: a UNet copy per arm, the VAE, conditioning."""

    def __init__(self, ctx: BenchContext, name: str):
        self.ctx, self.name = ctx, name
        self.models = ctx.models(name)
        self.cond = {batch: synthetic.synthetic_conditioning(self.models.family, batch, ctx.device, ctx.dtype)[0]
                     for batch in (1,)}
        self._vae = None

    def conditioning(self, batch: int):
        if batch not in self.cond:
            self.cond[batch] = synthetic.synthetic_conditioning(self.models.family, batch, self.ctx.device,
                                                                self.ctx.dtype)[0]
        return self.cond[batch]

    @property
    def vae(self):
        if self._vae is None:
            self.models.diffusers_vae, self._vae = synthetic.build_vae(self.ctx.device, self.ctx.dtype)
        return self._vae

    def lcm_copy(self, fresh: bool = True):
        """A UNet copy with the pack's LCM model sampling (as after LCMLoraLoader / ModelSamplingLCM)."""
        base = self.models.fresh_comfy_unet() if fresh else self.models.unet.comfy
        return self.ctx.host.call("LCMPack_ModelSamplingLCM", model=base)[0]

    def latent(self, batch: int) -> dict:
        return {"samples": torch.zeros(synthetic.latent_shape(self.models.family, batch))}


def fast_module(model, name: str = "comfy_fast_path"):
    """The pack module instance whose fast-path wrapper ``model`` carries (ComfyUI imports the pack under its
    folder name, the bench under ``lcm_lora_pack``: each instance keeps its own states)."""
    fp = pack("comfy_fast_path")
    wrappers = model.get_wrappers(fp.extensions.WrappersMP.SAMPLER_SAMPLE, fp.WRAPPER_KEY)
    package = wrappers[0].__module__.rsplit(".", 1)[0] if wrappers else "lcm_lora_pack.host"
    return sys.modules[f"{package}.{name}"]


def fast_arm(mode: str) -> str:
    """Name of the fast-path sampling arm of ``mode`` (the tables' row)."""
    return f"fast path {mode} → KSamplerLCM"


def fast_model(ctx: BenchContext, model, mode: str):
    """The fast path on ``model``: the node on CUDA; on the CPU (smoke) the module with the CPU stand-in."""
    if ctx.device.startswith("cuda"):
        return ctx.host.call("LCMPack_LCMFastPath", model=model, mode=mode)[0]
    fp = pack("comfy_fast_path")
    return fp.with_fast_path(model, fp.FastPathSettings(mode=mode, backend="eager_replay"))


def sampler(ctx: BenchContext, model, fam: Family, batch: int):
    cond, latent = fam.conditioning(batch), fam.latent(batch)
    return lambda: ctx.host.call("LCMPack_KSamplerLCM", model=model, seed=SEED, steps=STEPS, cfg=1.0,
                                 positive=cond, negative=cond, latent_image=latent, denoise=1.0)[0]


def decoder(ctx: BenchContext, fam: Family, fast_mode: str | None):
    if fast_mode is None:
        return lambda latent: ctx.host.call("VAEDecode", vae=fam.vae, samples=latent)[0]
    if ctx.device.startswith("cuda"):
        return lambda latent: ctx.host.call("LCMPack_FastVAEDecode", vae=fam.vae, samples=latent, mode=fast_mode)[0]
    vae_module = pack("comfy_fast_vae")
    return lambda latent: vae_module.fast_vae_decode(fam.vae, latent["samples"], fast_mode, backend="eager_replay")


def first_call(ctx: BenchContext, fn) -> tuple[object, float]:
    timing.synchronize(ctx.device)
    start = time.perf_counter()
    out = fn()
    timing.synchronize(ctx.device)
    return out, time.perf_counter() - start


def difference(a: torch.Tensor, b: torch.Tensor) -> str:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
    return f"vs eager: max abs {float((a - b).abs().max()):.2g}, rel L2 {rel:.2g}"


def sampling_arms(ctx: BenchContext, fam: Family, batch: int, modes, core_backends):
    """name -> (sample fn, model); the eager arm first."""
    arms = {"eager: ModelSamplingLCM → KSamplerLCM": sampler(ctx, fam.lcm_copy(fresh=False), fam, batch)}
    for backend in core_backends:
        (compiled,) = ctx.host.call("TorchCompileModel", model=fam.lcm_copy(), backend=backend)
        arms[f"core TorchCompileModel({backend}) → KSamplerLCM"] = sampler(ctx, compiled, fam, batch)
    fast = {}
    for mode in modes:
        fast[mode] = fast_model(ctx, fam.lcm_copy(), mode)
        arms[fast_arm(mode)] = sampler(ctx, fast[mode], fam, batch)
    return arms, fast


def add_replay_arms(ctx: BenchContext, arms: dict, fast: dict, notes: dict) -> dict[str, str]:
    """For each fast-path model captured by its first call: an arm that replays the captured loop alone, without
    ComfyUI around it (node, guider, conditioning, noise, buffer loads). The fast-path arm minus this arm is the
    host work per call; the rest of the fast-path time is the graph itself. Returns replay arm -> fast-path arm.
    CUDA only: a graph replays without Python, while the CPU stand-in re-runs ``apply_model``, which needs the
    sampling context ComfyUI sets up around a sampler call (its current patcher and hooks)."""
    replays = {}
    for mode, model in fast.items() if ctx.device.startswith("cuda") else ():
        fast_name = fast_arm(mode)
        state = fast_module(model).fast_path_state(model)
        entries = list(state.cache.entries.values()) if state and fast_name in arms else []
        if entries:
            name = f"fast path {mode}: captured loop replay alone"
            arms[name], notes[name] = entries[-1].captured.replay, "no ComfyUI call around it"
            replays[name] = fast_name
    return replays


def profile_host(ctx: BenchContext, fam: Family, batch: int, arms: dict, calls: int, top: int = 30) -> None:
    """cProfile ``calls`` calls of each arm: the functions by cumulative time, then by own time (totals over the
    calls). The captured replay is one line (``Captured.replay``); everything else is the host work the
    replay-alone arm leaves out, blocking device reads and copies included (they show as the builtins that wait)."""
    import cProfile
    import io
    import pstats

    for name, fn in arms.items():
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            fn()
        timing.synchronize(ctx.device)
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top // 2)  # the builtins that wait (syncs, copies) come first
        ctx.report("realtime-profile", f"### {fam.name} batch {batch}: cProfile of {name}, {calls} calls "
                   f"(divide by {calls} for per call)\n\n```\n{stream.getvalue().strip()}\n```\n")


def section(ctx: BenchContext, fam: Family, batch: int, args) -> None:
    modes = [m for m in args.modes.split(",") if m]
    core_backends = [b for b in args.core_backends.split(",") if b]
    arms, fast = sampling_arms(ctx, fam, batch, modes, core_backends)
    with_decode = fam.name in args.decode_families.split(",")
    if with_decode:
        eager_sample = arms["eager: ModelSamplingLCM → KSamplerLCM"]
        decode = decoder(ctx, fam, None)
        arms["eager KSamplerLCM + VAEDecode"] = lambda: decode(eager_sample())
        for backend in core_backends:
            core_sample = arms[f"core TorchCompileModel({backend}) → KSamplerLCM"]
            arms[f"core TorchCompileModel({backend}) + VAEDecode"] = lambda s=core_sample: decode(s())
        for mode in modes:
            fast_decode, fast_sample = decoder(ctx, fam, mode), arms[fast_arm(mode)]
            arms[f"fast path {mode} + FastVAEDecode {mode}"] = lambda s=fast_sample, d=fast_decode: d(s())
    notes, outputs, failed = {}, {}, {}
    for name, fn in list(arms.items()):
        try:
            outputs[name], seconds = first_call(ctx, fn)
            notes[name] = f"first call {seconds:.2f} s"
        except Exception as error:  # noqa: BLE001  (a failing arm is a result; the others still run)
            LOG.exception("arm %s failed", name)
            failed[name] = timing.ArmResult(name, error=f"{type(error).__name__}: {error}")
            del arms[name]
    replays = add_replay_arms(ctx, arms, fast, notes)
    reference = outputs.get("eager: ModelSamplingLCM → KSamplerLCM")
    reference_image = outputs.get("eager KSamplerLCM + VAEDecode")
    for name, out in outputs.items():
        value = out["samples"] if isinstance(out, dict) else out
        ref = reference_image if "Decode" in name else reference
        if ref is not None and "eager" not in name:
            notes[name] += "; " + difference(value, ref["samples"] if isinstance(ref, dict) else ref)
    results = timing.interleave(arms, ctx.device, ctx.repeats, ctx.warmup, peak=False)
    for replay_name, fast_name in replays.items():
        if results[replay_name].seconds and results[fast_name].seconds:
            host_ms = (results[fast_name].median - results[replay_name].median) * 1e3
            notes[replay_name] += f"; host work per call (fast-path arm − this) {host_ms:.2f} ms"
    results.update(failed)
    if args.profile_host:
        profile_host(ctx, fam, batch, {fast_arm(m): arms[fast_arm(m)] for m in fast if fast_arm(m) in arms},
                     args.profile_host)
    ctx.report("realtime", timing.table(f"{fam.name}: 4-step LCM, batch {batch}, "
                                        f"{fam.models.family.image_size}², cfg 1, {ctx.dtype}", results,
                                        reference="eager: ModelSamplingLCM → KSamplerLCM", notes=notes),
               {"family": fam.name, "batch": batch, "notes": notes, **{k: v.seconds for k, v in results.items()}})
    events = []
    for mode, model in fast.items():
        module = fast_module(model)
        state = module.fast_path_state(model)
        calls = state.calls if state else {}
        events += [f"{mode}: calls on the fast path {calls.get('fast', 0)}, eager {calls.get('eager', 0)}"]
        events += module.fast_path_report(model)
    if with_decode and fast:
        events += fast_module(next(iter(fast.values())), "comfy_fast_vae").fast_decode_report(fam.vae)
    ctx.report("realtime-events", "capture events:\n\n" + "\n".join(f"- {line}" for line in events) + "\n")
    if args.profile_kernels:
        from .kernel_sections import parse_variants, section_kernels

        section_kernels(ctx, fam, batch, parse_variants(args.profile_kernels), sampler)


def lora_section(ctx: BenchContext, fam: Family, mode: str) -> None:
    """LCM-LoRA at strength 1.0 then 0.8 and back: first call after each change, then steady calls."""
    from .lora_files import write_benchmark_loras

    names = write_benchmark_loras(fam.models.unet.diffusers, ctx.host.loras_dir, f"rt-{fam.name}")
    base = fam.models.fresh_comfy_unet()
    rows = []
    for strength in (1.0, 0.8, 1.0):
        (patched,) = ctx.host.call("LCMPack_LCMLoraLoader", model=base, lora_name=names["lcm"],
                                   strength=strength)[:1]
        model = fast_model(ctx, patched, mode)
        sample = sampler(ctx, model, fam, 1)
        _, first = first_call(ctx, sample)
        steady = timing.interleave({"steady": sample}, ctx.device, ctx.repeats, 1, peak=False)["steady"]
        events = fast_module(model).fast_path_report(model)
        rows.append(f"| {strength} | {first:.2f} | {timing.fmt_ms(steady.median)} | {events[-1] if events else '–'} |")
    ctx.report("realtime-lora", f"### {fam.name}: LoRA strength changes, fast path {mode}, batch 1\n\n"
               "| strength | first call after the change s | steady median ms | last capture event |\n"
               "|---:|---:|---:|---|\n" + "\n".join(rows) + "\n")


def allocator_check(ctx: BenchContext) -> None:
    """Whether a CUDA graph captures under ComfyUI's default allocator setting (cudaMallocAsync backend)."""
    import subprocess

    code = ("import torch;x=torch.randn(64,64,device='cuda');s=torch.cuda.Stream();s.wait_stream("
            "torch.cuda.current_stream());\nwith torch.cuda.stream(s): y=x@x\ntorch.cuda.current_stream().wait_stream(s)"
            "\ng=torch.cuda.CUDAGraph()\nwith torch.cuda.graph(g): y=(x@x).relu()\ng.replay();torch.cuda.synchronize()"
            "\nprint('capture ok', torch.cuda.get_allocator_backend())")
    env = {**__import__("os").environ, "PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    result = run.stdout.strip() or run.stderr.strip().splitlines()[-1]
    ctx.report("realtime-alloc", f"cudaMallocAsync allocator: {result}\n")


def run_job(ctx: BenchContext, fam: Family, batch: int, args) -> int:
    """One table (batch 0: the LoRA part); returns 1 if it failed (reported), else 0."""
    start = time.perf_counter()
    try:
        if batch:
            section(ctx, fam, batch, args)
        else:
            lora_section(ctx, fam, args.modes.split(",")[-1])
        return 0
    except Exception as error:  # noqa: BLE001  (keep the other sections)
        LOG.exception("job %s b%d failed", fam.name, batch)
        ctx.report("realtime", f"### {fam.name} batch {batch or 'LoRA'}\n\nFAILED: {type(error).__name__}: {error}\n")
        return 1
    finally:
        LOG.info("job %s b%d took %.1f s", fam.name, batch, time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("bench", "lcm_lora_pack", "lcm-lora-pack"):
        logging.getLogger(name).setLevel(logging.INFO)
    from .host import boot

    host = boot(args.device)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    ctx = BenchContext(host=host, device=args.device, dtype=dtype, repeats=args.repeats, warmup=args.warmup,
                       out_dir=args.out, smoke=args.smoke)
    header = "## Real-time LCM benchmark\n\n" + environment(args.device).replace("bench.lcm_bench", "bench.bench_realtime")
    if args.device.startswith("cuda"):
        allocator_check(ctx)
    failures = 0
    fam, lora_done = None, False
    for job in [j for j in args.jobs.split(",") if j]:
        family, batch = job.split(":")
        if fam is None or fam.name != family:
            if fam is not None:
                ctx.drop_models(fam.name)
            fam = Family(ctx, family)
        failures += run_job(ctx, fam, int(batch), args)
        ctx.write(header)
        if family == args.lora_family and not lora_done:
            lora_done = True
            failures += run_job(ctx, fam, 0, args)
            ctx.write(header)
    path = ctx.write(header)
    print(f"\nBENCH TABLES WRITTEN: {path} ({len(ctx.sections)} tables, {failures} failed sections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
