"""The end-to-end graph "CLIPTextEncode ×2 → sampler → VAEDecode" as ComfyUI's executor re-runs it.

The executor caches every node whose inputs did not change, so what a re-queued graph costs depends on what
changed:

* **new seed** (re-queue): the sampler and the decode re-run; both text encodes are cached;
* **new prompt** (positive text changed): the positive encode, the sampler and the decode re-run; the unchanged
  negative encode is cached;
* **cold** (both texts changed; models resident): both encodes, the sampler and the decode.

A sampler with a lazy ``negative`` input (the pack's ``KSamplerLCM``) is first asked, as the executor asks it
(``check_lazy_status``), whether it wants the negative; when it does not (cfg 1), the negative is never encoded,
in any scenario. Every part is also timed on its own in the same interleaved rounds, so the fixed costs (text
encode, VAE decode) are measured rather than derived.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import timing

SCENARIOS = (
    ("new seed", "sampler + decode (both encodes cached)", False, False),
    ("new prompt", "positive encode + sampler + decode (negative cached)", True, False),
    ("cold", "both encodes + sampler + decode (models resident)", True, True),
)
"""(name, what re-runs, positive re-encoded, negative re-encoded)."""


@dataclass
class SamplerArm:
    """One sampler of the graph: ``sample(positive, negative) -> LATENT``; ``wants_negative(positive)`` is what
    the node answers the executor about its negative input (always True for a node without a lazy one)."""

    label: str
    sample: Callable
    wants_negative: Callable


@dataclass
class Graph:
    """The parts shared by both arms: the two text encodes (and their cached results) and the decode."""

    encode_positive: Callable
    encode_negative: Callable
    decode: Callable
    positive: object
    negative: object

    def run(self, arm: SamplerArm, positive_changed: bool, negative_changed: bool, decode: Callable | None = None):
        """The graph after a change: changed encodes re-run, the sampler asks for the negative if it wants it."""
        positive = self.encode_positive() if positive_changed else self.positive
        negative = None
        if arm.wants_negative(positive):
            negative = self.encode_negative() if negative_changed else self.negative
        return (decode or self.decode)(arm.sample(positive, negative))

    def sampler_alone(self, arm: SamplerArm):
        """The sampler with cached conditioning (the negative only where the node asks for it)."""
        return arm.sample(self.positive, self.negative if arm.wants_negative(self.positive) else None)


def graph_name(scenario: str, arm: SamplerArm) -> str:
    return f"graph, {scenario}: {arm.label}"


def part_names(baseline: SamplerArm, lcm: SamplerArm | None) -> dict[str, str]:
    names = {"pos": "part: CLIPTextEncode positive", "neg": "part: CLIPTextEncode negative",
             "decode": "part: VAEDecode (full SD VAE)", "base": f"part: sampler alone, {baseline.label}"}
    if lcm is not None:
        names["lcm"] = f"part: sampler alone, {lcm.label}"
    return names


def build_arms(graph: Graph, baseline: SamplerArm, lcm: SamplerArm | None, latent_for_decode,
               taesd_decode: Callable | None) -> dict[str, Callable]:
    """Every timed arm: the parts on their own, then each scenario's full graph for each sampler, then the
    informational TAESD graph. The decode parts decode ``latent_for_decode`` (a 4-step result)."""
    names = part_names(baseline, lcm)
    arms = {names["pos"]: graph.encode_positive, names["neg"]: graph.encode_negative,
            names["decode"]: lambda: graph.decode(latent_for_decode)}
    if taesd_decode is not None:
        arms["part: VAEDecode (TAESD; different decoder)"] = lambda: taesd_decode(latent_for_decode)
    arms[names["base"]] = lambda: graph.sampler_alone(baseline)
    if lcm is not None:
        arms[names["lcm"]] = lambda: graph.sampler_alone(lcm)
    for scenario, _, positive_changed, negative_changed in SCENARIOS:
        for arm in (baseline, lcm) if lcm is not None else (baseline,):
            arms[graph_name(scenario, arm)] = (lambda arm=arm, p=positive_changed, n=negative_changed:
                                               graph.run(arm, p, n))
    if lcm is not None and taesd_decode is not None:
        arms[taesd_graph_name(lcm)] = lambda: graph.run(lcm, True, True, decode=taesd_decode)
    return arms


def taesd_graph_name(lcm: SamplerArm) -> str:
    return f"informational, cold: {lcm.label}, decoded with TAESD (a different decoder, not the target row)"


def parts_sum(results: dict[str, timing.ArmResult], names: dict[str, str], sampler_key: str,
              positive: bool, negative: bool) -> float:
    """Sum of the parts' medians that a scenario re-runs."""
    keys = [sampler_key, "decode"] + (["pos"] if positive else []) + (["neg"] if negative else [])
    return sum(results[names[k]].median for k in keys)


def graph_notes(results, names, graph: Graph, baseline: SamplerArm, lcm: SamplerArm | None) -> dict[str, str]:
    """Per graph row: the decode's share of it, the sum of its parts (measured separately) and, for a sampler
    that does not want the negative, that the negative was never encoded."""
    notes = {}
    decode = results[names["decode"]].median
    for scenario, _, positive_changed, negative_changed in SCENARIOS:
        for key, arm in (("base", baseline), ("lcm", lcm)):
            if arm is None or not results.get(graph_name(scenario, arm), timing.ArmResult("")).seconds:
                continue
            wants = arm.wants_negative(graph.positive)
            total = results[graph_name(scenario, arm)].median
            summed = parts_sum(results, names, key, positive_changed, negative_changed and wants)
            note = f"decode {100 * decode / total:.0f} % of it; parts sum {timing.fmt_ms(summed)} ms"
            if not wants:
                note += "; negative never encoded (the sampler does not request it at cfg 1)"
            notes[graph_name(scenario, arm)] = note
    return notes


def scenario_table(title: str, results: dict[str, timing.ArmResult], names: dict[str, str],
                   baseline: SamplerArm, lcm: SamplerArm) -> tuple[str, dict[str, float]]:
    """Markdown: per scenario the 25-step and the 4-step graph, the speed-up and the decode's share."""
    lines = [f"### {title}", "",
             "| scenario | re-runs | 25-step ms | 4-step ms | speed-up | decode share 25-step / 4-step |",
             "|---|---|---:|---:|---:|---:|"]
    decode = results[names["decode"]].median
    speedups = {}
    rows = [(name, what, graph_name(name, baseline), graph_name(name, lcm)) for name, what, _, _ in SCENARIOS]
    rows.append(("sampler alone", "sampler only (not a graph)", names["base"], names["lcm"]))
    for scenario, what, base_key, lcm_key in rows:
        base, fast = results[base_key], results[lcm_key]
        if not base.seconds or not fast.seconds:
            lines.append(f"| {scenario} | {what} | – | – | – | FAILED or skipped |")
            continue
        speedups[scenario] = base.median / fast.median
        share = ("–" if scenario == "sampler alone"
                 else f"{100 * decode / base.median:.0f} % / {100 * decode / fast.median:.0f} %")
        lines.append(f"| {scenario} | {what} | {timing.fmt_ms(base.median)} | {timing.fmt_ms(fast.median)} | "
                     f"**{speedups[scenario]:.2f}×** | {share} |")
    return "\n".join(lines) + "\n", speedups


def picked_dtypes(models, unet_patcher) -> dict[str, str]:
    """The dtypes (and devices) ComfyUI picked for the UNet, the text encoder(s), the VAE and TAESD."""
    def short(dtype) -> str:
        return str(dtype).replace("torch.", "")

    unet = unet_patcher.model
    cast = getattr(unet, "manual_cast_dtype", None)
    clip_dtypes = sorted(short(d) for d in getattr(models.clip.cond_stage_model, "dtypes", ()))
    picked = {
        "unet": f"{short(unet.get_dtype())}{f' (manual cast {short(cast)})' if cast else ''} on "
                f"{unet_patcher.load_device}",
        "clip": f"{', '.join(clip_dtypes) or '?'} on {models.clip.patcher.load_device}",
        "vae": f"{short(models.vae.vae_dtype)} on {models.vae.device}",
    }
    if models.taesd is not None:
        picked["taesd"] = f"{short(models.taesd.vae_dtype)} on {models.taesd.device}"
    return picked
