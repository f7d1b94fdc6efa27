"""Per-kernel profile of the real-time path, with one-change variants (issue 23, "kernels near the GPU").

Why. On an H100 the compiled captured loop spends 7.8 ms per UNet step where one diffusers SD1.5 step compiled
with ``torch.compile(mode="reduce-overhead")`` takes 6.0 ms (issue 23): the time is in the kernels, not the
host. This section says which kernels, by category, and what one change each does to them.

Arms, per variant (``bench_realtime --profile-kernels``, after the job's timing table):

1. **eager UNet step**: ComfyUI's diffusion model forward on the job's batch (``sampling_sections._unet_inputs``);
2. **compiled UNet step**: the same module through ``torch.compile`` (inductor, fixed shapes; the variant's mode);
3. **compiled captured loop**: ``KSamplerLCM`` 4 steps through the fast path ``compile_cuda_graph``, then the
   captured loop replayed alone (no ComfyUI call around it). CPU smoke: the fast path's CPU stand-in of mode
   ``cuda_graph`` (no compile), the whole sampler call.

Variants, one change each from ``baseline`` (the job's dtype, NCHW weights, SDPA choosing its own backend,
torch.compile's default mode): ``sdpa-flash`` / ``sdpa-efficient`` / ``sdpa-math`` (``torch.nn.attention.
sdpa_kernel`` around the calls and around the compile / capture, which fix the backend of the compiled code and
the graph; ComfyUI's attention is SDPA on CUDA by default), ``channels_last`` (the UNet's weights in
``torch.channels_last``), ``bf16`` (the UNet loaded in bfloat16 by ComfyUI), ``max-autotune`` (``torch.compile``
mode ``max-autotune-no-cudagraphs``: arms 2 and 3 only). ``torch._dynamo.reset()`` before each variant (dynamo's
recompile limit would otherwise run later variants eager).

Reported per arm and variant, per UNet step: device ms by category (``profile_sections.KERNEL_CATEGORIES``),
kernel launches, copy/cast launches and host ``aten::_to_copy`` calls (the per-step dtype casts); and the top
kernels of the baseline arms. On the CPU (smoke) the rows are ATen ops by own CPU time.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass

import torch

from . import timing
from .context import BenchContext
from .profile_sections import KERNEL_CATEGORIES, KernelProfile, kernel_profile
from .sampling_sections import _unet_inputs

LOG = logging.getLogger(__name__)
STEPS = 4
ARMS = ("eager UNet step", "compiled UNet step", "compiled captured loop")


@dataclass(frozen=True)
class Variant:
    name: str
    sdpa: str | None = None  # torch.nn.attention.SDPBackend member name
    channels_last: bool = False
    dtype: torch.dtype | None = None
    compile_mode: str | None = None

    @property
    def changes_eager(self) -> bool:
        return self.compile_mode is None

    def context(self):
        if self.sdpa is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, self.sdpa))


VARIANTS = {variant.name: variant for variant in (
    Variant("baseline"), Variant("sdpa-flash", sdpa="FLASH_ATTENTION"),
    Variant("sdpa-efficient", sdpa="EFFICIENT_ATTENTION"), Variant("sdpa-math", sdpa="MATH"),
    Variant("channels_last", channels_last=True), Variant("bf16", dtype=torch.bfloat16),
    Variant("max-autotune", compile_mode="max-autotune-no-cudagraphs"))}


def parse_variants(text: str) -> list[Variant]:
    names = list(VARIANTS) if text == "all" else [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"--profile-kernels: unknown variant(s) {unknown}; known: {', '.join(VARIANTS)} or 'all'")
    return [VARIANTS[name] for name in names]


def variant_arms(ctx: BenchContext, fam, batch: int, variant: Variant, sampler) -> dict:
    """arm name -> callable (already warmed: compiled, captured) for one variant; ``sampler(ctx, model, fam,
    batch)`` is the real-time bench's ``KSampler (LCM)`` call."""
    import comfy.model_management

    fast_path = importlib.import_module("lcm_lora_pack.host.comfy_fast_path")

    base = fam.models.fresh_comfy_unet(variant.dtype)
    comfy.model_management.load_models_gpu([base])
    if variant.channels_last:
        base.model.diffusion_model.to(memory_format=torch.channels_last)
    (lcm,) = ctx.host.call("LCMPack_ModelSamplingLCM", model=base)
    unet = base.model.diffusion_model
    x, t, kwargs, _ = _unet_inputs(fam.models, batch, ctx.device, variant.dtype or fam.models.unet_dtype)
    cuda = ctx.device.startswith("cuda")
    backend = "inductor" if cuda else "eager"  # CPU smoke: dynamo tracing only
    compiled = torch.compile(unet, backend=backend, dynamic=False, mode=variant.compile_mode if cuda else None)

    def step(module):
        @torch.inference_mode()
        def run():
            with variant.context():
                return module(x, timesteps=t, **kwargs)
        return run

    arms = {ARMS[0]: step(unet)} if variant.changes_eager else {}
    arms[ARMS[1]] = step(compiled)
    fp = fast_path
    settings = fp.FastPathSettings(mode="compile_cuda_graph" if cuda else "cuda_graph",
                                   backend="cuda_graph" if cuda else "eager_replay", compile_mode=variant.compile_mode)
    fast = fp.with_fast_path(lcm, settings)
    sample = sampler(ctx, fast, fam, batch)
    with variant.context():
        sample()  # compile and capture under the variant
    if cuda:
        state = fp.fast_path_state(fast)
        entries = list(state.cache.entries.values()) if state else []
        if not entries:
            raise RuntimeError(f"the fast path did not capture: {fp.fast_path_report(fast)[-1:]}, calls "
                               f"{state.calls if state else None}")
        arms[ARMS[2]] = entries[-1].captured.replay
    else:
        arms[ARMS[2]] = sample
    for name in (ARMS[0], ARMS[1]):
        if name in arms:
            arms[name]()  # warm-up (the compile happens here)
    return arms


def profile_variant(ctx: BenchContext, fam, batch: int, variant: Variant, sampler) -> dict[str, KernelProfile | str]:
    """arm -> its profile, or the error text when the variant or the arm failed (the others still run)."""
    torch._dynamo.reset()
    try:
        arms = variant_arms(ctx, fam, batch, variant, sampler)
    except Exception as error:  # noqa: BLE001  (a variant the device or torch refuses is a result)
        LOG.exception("kernel variant %s failed", variant.name)
        return {ARMS[0]: f"{type(error).__name__}: {str(error)[:160]}"}
    profiles = {}
    for name, fn in arms.items():
        try:
            profiles[name] = kernel_profile(fn, ctx.device, 1 if ctx.smoke else 3)
        except Exception as error:  # noqa: BLE001
            LOG.exception("kernel profile of %s / %s failed", variant.name, name)
            profiles[name] = f"{type(error).__name__}: {str(error)[:160]}"
    return profiles


def _row(variant: str, arm: str, profile: KernelProfile | str) -> str:
    if isinstance(profile, str):
        return f"| {variant} | {arm} | FAILED: {profile} |" + " |" * (len(KERNEL_CATEGORIES) + 3)
    per = STEPS if arm == ARMS[2] else 1
    categories = profile.by_category()
    cells = [f"{sum(categories.values()) / per:.2f}", *(f"{categories[c] / per:.2f}" for c in KERNEL_CATEGORIES),
             f"{sum(row.launches for row in profile.rows) / per:.0f}", f"{profile.launches('copy/cast') / per:.0f}",
             f"{profile.host_casts / per:.0f}"]
    return f"| {variant} | {arm} | " + " | ".join(cells) + " |"


def _top_table(profiles: dict, count: int = 12) -> str:
    lines = []
    for arm, profile in profiles.items():
        if isinstance(profile, str):
            continue
        per = STEPS if arm == ARMS[2] else 1
        lines += [f"\nbaseline, {arm}: top {count} by time\n", "| kernel | category | launches / step | ms / step |",
                  "|---|---|---:|---:|"]
        lines += [f"| `{row.name[:110]}` | {row.category} | {row.launches / per:.1f} | {row.ms / per:.3f} |"
                  for row in profile.top(count)]
    return "\n".join(lines) + "\n"


def section_kernels(ctx: BenchContext, fam, batch: int, variants: list[Variant], sampler) -> None:
    """The per-kernel table of one job (``ctx.report`` section ``realtime-kernels``); ``sampler`` as in
    :func:`variant_arms`."""
    import comfy.model_management

    unit = "device ms" if ctx.device.startswith("cuda") else "ATen own CPU ms"
    lines = [f"### {fam.name} batch {batch}: kernels per UNet step ({unit}; the loop's rows / {STEPS} steps), "
             f"{ctx.dtype}\n",
             "| variant | arm | total | " + " | ".join(KERNEL_CATEGORIES)
             + " | launches | copy/cast launches | aten::_to_copy |",
             "|---|---|" + "---:|" * (len(KERNEL_CATEGORIES) + 4)]
    baseline, data = {}, {}
    for variant in variants:
        profiles = profile_variant(ctx, fam, batch, variant, sampler)
        lines += [_row(variant.name, arm, profile) for arm, profile in profiles.items()]
        data[variant.name] = {arm: (p if isinstance(p, str) else {"by_category": p.by_category(),
                                                                  "host_casts": p.host_casts})
                              for arm, p in profiles.items()}
        if variant.name == "baseline":
            baseline = profiles
        comfy.model_management.unload_all_models()  # the variant's UNet copy and its fast-path state go
        timing.synchronize(ctx.device)
    ctx.report("realtime-kernels", "\n".join(lines) + "\n" + (_top_table(baseline) if baseline else ""),
               {"family": fam.name, "batch": batch, "kernels": data})
