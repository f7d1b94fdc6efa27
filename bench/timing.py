"""Interleaved, repeated timing with medians, spreads, ratios and peak memory; markdown tables.

Device timings on shared GPUs swing by ±30 %, so arms that are compared run in the same process,
interleaved round by round (the order rotates each round), and only medians and ratios of medians are
reported, with the p10–p90 spread next to them.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

LOG = logging.getLogger(__name__)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class ArmResult:
    """Timings (seconds) of one arm, plus its peak device memory (bytes) when measured."""

    name: str
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    peak_abs_bytes: int | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def quantile(self, q: float) -> float:
        if len(self.seconds) < 2:
            return self.median
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_peak(fn: Callable[[], object], device: str) -> tuple[int | None, int | None]:
    """Peak allocated device memory during one call of ``fn``: (above what was allocated before the call,
    absolute). The first is the arm's working memory; the second includes every resident model of the
    benchmark process (several UNet copies), so it is an upper bound. (None, None) on CPU."""
    if not device.startswith("cuda"):
        fn()
        return None, None
    synchronize(device)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated()
    return peak - before, peak


def interleave(arms: dict[str, Callable[[], object]], device: str, repeats: int, warmup: int = 1,
               peak: bool = True, setups: dict[str, Callable[[], object]] | None = None) -> dict[str, ArmResult]:
    """Time every arm ``repeats`` times, interleaved; an arm that raises is recorded and dropped.

    ``setups[name]``, when given, runs untimed before each call of that arm (e.g. restore the unpatched
    model before timing a LoRA apply).
    """
    setups = setups or {}
    results = {name: ArmResult(name) for name in arms}
    live = {name: _with_setup(fn, setups.get(name)) for name, fn in arms.items()}
    timed = dict(arms)
    for name, fn in list(live.items()):
        try:
            for _ in range(max(warmup, 0)):
                fn()
            if peak:
                results[name].peak_bytes, results[name].peak_abs_bytes = measure_peak(fn, device)
        except Exception as error:  # noqa: BLE001  (a broken arm must not stop the others)
            LOG.exception("arm %s failed in warm-up", name)
            results[name].error = f"{type(error).__name__}: {error}"
            del live[name]
    names = list(live)
    for round_index in range(repeats):
        shift = round_index % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            if name in setups:
                setups[name]()
            synchronize(device)
            start = time.perf_counter()
            timed[name]()
            synchronize(device)
            results[name].seconds.append(time.perf_counter() - start)
    return results


def _with_setup(fn, setup):
    if setup is None:
        return fn

    def run():
        setup()
        return fn()

    return run


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def fmt_gib(num_bytes: int | None) -> str:
    return "–" if num_bytes is None else f"{num_bytes / 2**30:.2f}"


def table(title: str, results: dict[str, ArmResult], reference: str | None = None,
          notes: dict[str, str] | None = None) -> str:
    """A markdown table: median ms, p10–p90, n, ratio to ``reference``, working memory, note.

    "work GiB" is the peak device memory allocated during one call above what was allocated before it
    (activations, latents, temporary weights); resident weights are stated per section.
    """
    ref = results.get(reference) if reference else None
    lines = [f"### {title}", "",
             "| arm | median ms | p10–p90 ms | n | × " + (reference or "–") + " | work GiB | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, result in results.items():
        note = (notes or {}).get(name, "")
        if result.skipped:
            lines.append(f"| {name} | – | – | 0 | – | – | SKIPPED: {result.skipped[:160]} |")
            continue
        if result.error:
            lines.append(f"| {name} | – | – | 0 | – | – | FAILED: {result.error[:160]} |")
            continue
        ratio = result.median / ref.median if ref and ref.seconds and not ref.error else float("nan")
        spread = f"{fmt_ms(result.quantile(0.1))}–{fmt_ms(result.quantile(0.9))}"
        lines.append(f"| {name} | {fmt_ms(result.median)} | {spread} | {len(result.seconds)} | "
                     f"{ratio:.3f} | {fmt_gib(result.peak_bytes)} | {note} |")
    return "\n".join(lines) + "\n"


def scaled(result: ArmResult, factor: float, name: str) -> ArmResult:
    """A derived arm (e.g. 4 × one UNet step) from another arm's samples."""
    return ArmResult(name, [s * factor for s in result.seconds], error=result.error)
