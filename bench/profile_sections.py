"""Section: where the time of a 4-step LCM sample goes beyond 4 × UNet step (profile + controlled variants).

Three measurements, written to ``out_dir``:

* ``torch.profiler`` over the core path and the pack path: GPU kernel-busy time per call against wall
  time (the rest is the GPU waiting for the CPU), and the count of host-device synchronisations
  (``cudaStreamSynchronize`` / device-to-host copies) per call;
* ``cProfile`` per-call cumulative times of the ComfyUI functions on the path (setup, per-step cond
  handling, the UNet forward, the sampler loop);
* controlled variants through core's ``SamplerCustom`` that differ in one thing each: core's ``lcm``
  sampler vs the same LCM update written without the per-step ``sigmas[i + 1] > 0`` device read.
"""
from __future__ import annotations

import cProfile
import io
import logging
import pstats
from dataclasses import dataclass

import torch

from . import synthetic, timing
from .context import BenchContext
from .sampling_sections import LCM_STEPS, SEED, _latent, lcm_sampling_arms, unet_step_arms

LOG = logging.getLogger(__name__)
FUNCTIONS = (
    ("nodes.py", "common_ksampler"), ("sample.py", "sample"), ("sample.py", "prepare_noise"),
    ("samplers.py", "outer_sample"), ("sampler_helpers.py", "prepare_sampling"),
    ("model_management.py", "load_models_gpu"), ("samplers.py", "process_conds"),
    ("samplers.py", "inner_sample"), ("samplers.py", "calc_cond_batch"),
    ("model_management.py", "get_free_memory"), ("model_base.py", "apply_model"),
    ("openaimodel.py", "forward"), ("sampling.py", "sample_lcm"), ("sampler_helpers.py", "cleanup_models"),
    ("latent_preview.py", "prepare_callback"), ("model_management.py", "cleanup_models_gc"),
)


@torch.no_grad()
def sample_lcm_without_step_sync(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                 noise_sampler=None):
    """Core's ``sample_lcm`` update (LCM, arXiv 2310.04378, Alg. 1: x ← denoised, re-noised to the next
    sigma) with the "is there a next sigma" test read once from a host copy of the schedule instead of
    ``sigmas[i + 1] > 0`` on the device at every step (a blocking device-to-host read)."""
    import comfy.k_diffusion.sampling as kds

    extra_args = {} if extra_args is None else extra_args
    noise_sampler = kds.default_noise_sampler(x, seed=extra_args.get("seed")) if noise_sampler is None \
        else noise_sampler
    host_sigmas = sigmas.detach().cpu().tolist()
    s_in = x.new_ones([x.shape[0]])
    model_sampling = model.inner_model.inner_model.model_sampling
    for i in range(len(host_sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if host_sigmas[i + 1] > 0:
            x = model_sampling.noise_scaling(sigmas[i + 1], noise_sampler(sigmas[i], sigmas[i + 1]), x)
    return x


@torch.no_grad()
def sample_bare_calls(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """No sampler math at all: one guided model call per step (isolates core's guider + model wrapper)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * s_in, **extra_args)
    return x


def _custom_arms(ctx: BenchContext, model, cond, latent) -> dict:
    import comfy.samplers

    host = ctx.host
    (lcm_model,) = host.call("ModelSamplingDiscrete", model=model, sampling="lcm", zsnr=False)
    (sigmas,) = host.call("BasicScheduler", model=lcm_model, scheduler="simple", steps=LCM_STEPS, denoise=1.0)
    (core_sampler,) = host.call("KSamplerSelect", sampler_name="lcm")
    nosync = comfy.samplers.KSAMPLER(sample_lcm_without_step_sync)
    bare = comfy.samplers.KSAMPLER(sample_bare_calls)

    def run(sampler):
        return host.call("SamplerCustom", model=lcm_model, add_noise=True, noise_seed=SEED, cfg=1.0,
                         positive=cond, negative=cond, sampler=sampler, sigmas=sigmas, latent_image=latent)[0]

    return {"core SamplerCustom(KSamplerSelect lcm)": lambda: run(core_sampler),
            "SamplerCustom(LCM loop without per-step sync)": lambda: run(nosync),
            "SamplerCustom(bare loop: 4 guided model calls, no sampler math)": lambda: run(bare),
            "4 × BaseModel.apply_model (ComfyUI model wrapper, no guider)": _apply_model_arm(ctx, lcm_model, cond, latent["samples"].shape[-1])}


def _apply_model_arm(ctx: BenchContext, lcm_model, cond, side: int):
    """4 calls of ``BaseModel.apply_model`` at the LCM sigmas: UNet + ComfyUI's input/output scaling and
    timestep conversion, without the sampler, guider or cond batching."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([lcm_model])
    base = lcm_model.model
    sampling = lcm_model.get_model_object("model_sampling")
    context = cond[0][0].to(ctx.device, ctx.dtype)
    extra = {}
    if "pooled_output" in cond[0][1]:
        extra["y"] = base.encode_adm(pooled_output=cond[0][1]["pooled_output"], width=side * 8,
                                     height=side * 8).to(ctx.device, ctx.dtype)
    x = torch.randn(1, 4, side, side, device=ctx.device)
    sigmas = sampling.sigmas.to(ctx.device)[[-1, -13, -26, -38]]

    @torch.inference_mode()
    def run():
        out = x
        for sigma in sigmas:
            out = base.apply_model(out, sigma.view(1), c_crossattn=context, **extra)
        return out

    return run


def _torch_profile(ctx: BenchContext, name: str, fn, calls: int = 3) -> dict:
    try:
        return _torch_profile_unsafe(ctx, name, fn, calls)
    except Exception:  # noqa: BLE001  (the profiler is diagnostics: the timings stand without it)
        LOG.exception("torch.profiler failed for %s", name)
        return {}


def _torch_profile_unsafe(ctx: BenchContext, name: str, fn, calls: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        timing.synchronize(ctx.device)
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") \
        if hasattr(events[0], "self_device_time_total") else float("nan")
    sync_names = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemGetInfo",
                  "aten::item", "aten::_local_scalar_dense")
    counts = {n: sum(e.count for e in events if e.key == n) / calls for n in sync_names}
    text = events.table(sort_by="self_cpu_time_total", row_limit=40)
    safe = "".join(c if c.isalnum() else "_" for c in name)[:60]
    (ctx.out_dir / f"torchprof_{safe}.txt").write_text(text)
    return {"gpu_kernel_ms_per_call": kernel_us / 1e3 / calls, **{f"{k}/call": v for k, v in counts.items()}}


def _cprofile(fn, calls: int = 5, functions=FUNCTIONS, setup=None) -> dict[str, float]:
    """Per-call cumulative ms of ``functions`` ((file suffix, name) pairs) over ``calls`` calls of ``fn``
    (``setup`` runs first, unprofiled); ``"_text"`` holds the top of the cumulative listing."""
    if setup is not None:
        setup()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    profiler.disable()
    stats = pstats.Stats(profiler)
    out = {}
    for (file, _line, func), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():
        for want_file, want_func in functions:
            if file.endswith(want_file) and func == want_func:
                key = f"{want_file}:{want_func}"
                out[key] = max(out.get(key, 0.0), cumulative * 1e3 / calls)
    stream = io.StringIO()
    stats.stream = stream
    stats.sort_stats("cumulative").print_stats(45)
    out["_text"] = stream.getvalue()
    return out


def section_profile(ctx: BenchContext, family_name: str) -> None:
    models = ctx.models(family_name)
    cond, _ = synthetic.synthetic_conditioning(models.family, 1, ctx.device, ctx.dtype)
    latent = _latent(models)
    samplers, _ = lcm_sampling_arms(ctx, models.unet.comfy, latent)
    arms = {name: (lambda fn=fn: fn(cond, cond)) for name, fn in samplers.items()}
    arms.update(_custom_arms(ctx, models.unet.comfy, cond, latent))
    step, _ = unet_step_arms(ctx, models, 1)
    arms["UNet step ×1 (ComfyUI, eager)"] = step
    results = timing.interleave(arms, ctx.device, ctx.repeats, ctx.warmup, peak=False)
    floor = timing.scaled(results.pop("UNet step ×1 (ComfyUI, eager)"), LCM_STEPS, "floor: 4 × UNet step")
    lines = ["| arm | wall ms | GPU kernels ms | syncs/call | D2H+H2D copies/call | item()/call |",
             "|---|---:|---:|---:|---:|---:|"]
    details = {}
    for name, fn in arms.items():
        if name.startswith("UNet step") or name not in results or results[name].error:
            continue
        prof = _torch_profile(ctx, name, fn) if ctx.device.startswith("cuda") else {}
        cprof = _cprofile(fn, calls=1 if ctx.smoke else 3)
        (ctx.out_dir / f"cprofile_{family_name}_{len(details)}.txt").write_text(name + "\n" + cprof.pop("_text"))
        details[name] = {"torch": prof, "cprofile_ms_per_call": cprof}
        syncs = prof.get("cudaStreamSynchronize/call", float("nan")) + prof.get("cudaDeviceSynchronize/call", 0)
        lines.append(f"| {name} | {timing.fmt_ms(results[name].median)} | "
                     f"{prof.get('gpu_kernel_ms_per_call', float('nan')):.1f} | {syncs:.1f} | "
                     f"{prof.get('cudaMemcpyAsync/call', float('nan')):.1f} | "
                     f"{prof.get('aten::_local_scalar_dense/call', float('nan')):.1f} |")
    cp_lines = _cprofile_table(details)
    markdown = (timing.table(f"{family_name}: 4-step LCM variants (profile run)", {floor.name: floor, **results},
                             reference=floor.name)
                + "\n" + "\n".join(lines) + "\n\n" + cp_lines)
    ctx.report("profile", markdown, {"family": family_name, "details": details})


def cprofile_breakdown(ctx: BenchContext, label: str, arms: dict, functions, calls: int = 1,
                       setups: dict | None = None) -> str:
    """Markdown table of cumulative ms per call of ``functions`` for each arm (cProfile; inflates Python
    time, read the rows as shares). Full listings go to ``out_dir``."""
    details = {}
    for index, (name, fn) in enumerate(arms.items()):
        try:
            result = _cprofile(fn, calls=calls, functions=functions, setup=(setups or {}).get(name))
        except Exception as error:  # noqa: BLE001  (diagnostics only)
            LOG.exception("cProfile of %s failed", name)
            result = {"_text": f"failed: {error}"}
        safe = "".join(c if c.isalnum() else "_" for c in label)[:40]
        (ctx.out_dir / f"cprofile_{safe}_{index}.txt").write_text(name + "\n" + result.pop("_text"))
        details[name] = {"cprofile_ms_per_call": result}
    return _cprofile_table(details, functions)


def _cprofile_table(details: dict, functions=FUNCTIONS) -> str:
    names = list(details)
    if not names:
        return ""
    header = "| function (cProfile, cumulative ms per call) | " + " | ".join(f"[{i}]" for i in range(len(names))) + " |"
    lines = [header, "|---|" + "---:|" * len(names)]
    for want_file, want_func in functions:
        key = f"{want_file}:{want_func}"
        row = [f"{details[n]['cprofile_ms_per_call'].get(key, float('nan')):.1f}" for n in names]
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    legend = "\n".join(f"[{i}] {n}" for i, n in enumerate(names))
    return "\n".join(lines) + "\n\n" + legend + "\n"


# Kernel categories of the per-kernel profile (issue 23, "kernels near the GPU"), in table order. A CUDA kernel's
# name (cuDNN, cuBLAS, CUTLASS, PyTorch's ATen kernels, inductor's triton kernels) or, on the CPU, an ATen op's
# name is put in the first category whose needles it contains (lower case), in the order of ``_KERNEL_RULES``.
KERNEL_CATEGORIES = ("attention", "conv", "gemm", "norm", "copy/cast", "elementwise", "other")
_KERNEL_RULES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax")),
    ("copy/cast", ("copy", "cast", "convert", "memcpy", "memset", "nchwtonhwc", "nhwctonchw", "transpose",
                   "contiguous", "clone")),
    ("conv", ("conv", "fprop", "dgrad", "wgrad", "cudnn", "implicit_gemm", "winograd")),
    ("gemm", ("gemm", "matmul", "aten::mm", "aten::bmm", "addmm", "baddbmm", "cublas", "cutlass", "aten::linear")),
    ("norm", ("norm", "welford", "rowwisemoments", "computefusedparams")),
    ("elementwise", ("elementwise", "vectorized", "silu", "gelu", "add", "mul", "div", "sub", "cat", "reduce",
                     "sigmoid", "exp", "where", "index", "fill", "neg", "pow", "sqrt", "sin", "cos", "clamp")),
)
_CAST_OPS = {"to", "copy", "clone", "convert", "element", "type"}  # inductor's names of a pure cast / copy


def kernel_category(name: str) -> str:
    """The category (:data:`KERNEL_CATEGORIES`) of a kernel or ATen op name. Inductor's kernels
    (``triton_{poi,per,red,tem}_fused_<ops>_<n>``) by their fused ops: a template (``tem``) is a conv or a gemm,
    a fusion that normalises is norm, one of only casts / copies is copy/cast, the rest elementwise."""
    low = name.lower()
    if low.startswith("triton_"):
        ops = [op for op in low.split("fused_", 1)[-1].split("_") if op and not op.isdigit()]
        if low.startswith("triton_tem"):
            return "conv" if "convolution" in low else "gemm"
        if "softmax" in low:
            return "attention"
        if "norm" in low:
            return "norm"
        return "copy/cast" if ops and set(ops) <= _CAST_OPS else "elementwise"
    for category, needles in _KERNEL_RULES:
        if any(needle in low for needle in needles):
            return category
    return "other"


@dataclass
class KernelRow:
    name: str
    category: str
    launches: float  # per profiled call
    ms: float  # device (CUDA) or own CPU time per profiled call


@dataclass
class KernelProfile:
    """What :func:`kernel_profile` measured for one arm, per call of it."""

    rows: list[KernelRow]
    host_casts: float  # aten::_to_copy calls per call (host-side dtype / device casts that launched a copy)
    device: str  # "cuda": rows are kernels; "cpu": rows are ATen ops (own CPU time)

    def by_category(self) -> dict[str, float]:
        totals = dict.fromkeys(KERNEL_CATEGORIES, 0.0)
        for row in self.rows:
            totals[row.category] += row.ms
        return totals

    def launches(self, category: str) -> float:
        return sum(row.launches for row in self.rows if row.category == category)

    def top(self, count: int) -> list[KernelRow]:
        return sorted(self.rows, key=lambda row: -row.ms)[:count]


def kernel_profile(fn, device: str, calls: int) -> KernelProfile:
    """``torch.profiler`` over ``calls`` calls of ``fn``: every CUDA kernel (name, launches and device time per
    call; kernels a replayed CUDA graph launches included, as CUPTI reports them) or, on the CPU, every ATen op
    by own CPU time; and the ``aten::_to_copy`` calls per call."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        timing.synchronize(device)
    rows, casts = [], 0.0
    for event in prof.key_averages():
        if event.key == "aten::_to_copy":
            casts += event.count / calls
        if cuda and event.device_type.name != "CUDA":
            continue
        if not cuda and not event.key.startswith("aten::"):
            continue
        us = getattr(event, "self_device_time_total", 0.0) if cuda else event.self_cpu_time_total
        rows.append(KernelRow(event.key, kernel_category(event.key), event.count / calls, us / 1e3 / calls))
    return KernelProfile(rows, casts, "cuda" if cuda else "cpu")
