#!/usr/bin/env python3
"""Soak a real ComfyUI server with the pack (issue 18): N prompts mixing loads, mixes, exports and bad inputs.

    .venv/bin/python scripts/soak.py [--prompts 1000] [--max-seconds 1500] [--checkpoint tiny-sd15.safetensors]

Starts ``main.py`` on 127.0.0.1 (CPU, free port, temporary base directory; devkit/server.py) with generated
tiny models (devkit: SD1.5-family checkpoint, LCM / TCD / style LoRAs, one corrupt LoRA file), then sends
prompts one at a time, in a fixed seeded order: 40 % LCM-LoRA loader graphs (strength, sampler, steps, seed
varied), 25 % stack + mixer graphs, 15 % mixer graphs that also export the mix (concat or SVD, 3 file
names, overwrite) and 20 % bad
inputs (missing file, out-of-range value, unknown node, malformed JSON, corrupt LoRA file). Every
``--sample-every`` prompts it records the server's RSS and open files / descriptors (psutil) and prints them
as a table.

Bounds (the exit status is 1 when one is broken): after ``--warmup`` prompts, RSS may grow by at most
``--rss-growth-mib`` (default 256 MiB) and open descriptors by at most ``--fd-growth`` (default 8) over the
warm-up sample; every valid prompt must succeed and every bad one must be refused (HTTP 400; 500 for malformed JSON) or fail with an
execution error -- the server must keep answering. The run stops after ``--prompts`` prompts or
``--max-seconds``, whichever comes first.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import automation_example  # scripts/ is this script's own folder, first on sys.path
from lcm_lora_pack.devkit.server import ComfyServer

REPO = Path(__file__).resolve().parent.parent

LORAS = {"lcm": "soak-lcm-sd15.safetensors", "tcd": "soak-tcd-sd15.safetensors",
         "style": "soak-style-sd15.safetensors", "broken": "soak-broken.safetensors"}
CHECKPOINT = "soak-sd15.safetensors"
LATENT_PX = 32  # 4x4 latent: the UNet forward dominates a prompt's time on CPU, and the soak is about leaks
KINDS = ("load",) * 8 + ("mix",) * 5 + ("export",) * 3 + ("bad",) * 4
BAD_CASES = ("missing-file", "out-of-range", "unknown-node", "malformed-json", "corrupt-lora", "zero-steps")


def write_models(root: Path, checkpoint: Path | None) -> Path:
    """``root/checkpoints`` and ``root/loras`` with the tiny SD1.5 checkpoint and the soak's LoRA files."""
    from lcm_lora_pack.devkit import loras, models

    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    target = root / "checkpoints" / CHECKPOINT
    if checkpoint is not None:
        target.symlink_to(checkpoint.resolve())
    else:
        models.write_sd15_checkpoint(target, seed=0)
    (root / "loras").mkdir(exist_ok=True)
    for kind, seed, rank in (("lcm", 11, 8), ("tcd", 14, 8), ("style", 13, 4)):
        loras.make_kohya_lora(models.SD15_UNET_CONFIG, root / "loras" / LORAS[kind], rank=rank, seed=seed,
                              kind=None if kind == "style" else kind)
    (root / "loras" / LORAS["broken"]).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")
    return root


def _sampling_graph(rng: random.Random, model: list) -> dict:
    """Text encode, a 32 px image's latent, KSamplerLCM (1-2 steps), decode, preview of ``model`` (a link).

    The prompts are encoded with the checkpoint's CLIP (the soak's LoRAs have no text-encoder modules), so
    ComfyUI's cache keeps them across prompts: a random CLIP-L encode costs seconds on 2 busy CPU cores.
    """
    return {
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": LATENT_PX, "height": LATENT_PX, "batch_size": 1}},
        "6": {"class_type": "LCMPack_KSamplerLCM",
              "inputs": {"seed": rng.randrange(1 << 32), "steps": rng.choice([1, 2]),
                         "cfg": rng.choice([1.0, 1.0, 1.0, 1.5]), "sampler": rng.choice(["lcm", "tcd"]), "gamma": 0.3,
                         "denoise": 1.0, "model": model, "positive": ["3", 0], "negative": ["4", 0],
                         "latent_image": ["5", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


def _stack(rng: random.Random) -> dict:
    return {"10": {"class_type": "LCMPack_LoraStack",
                   "inputs": {"lora_name": LORAS["lcm"], "weight": 1.0, "role": "accelerator"}},
            "11": {"class_type": "LCMPack_LoraStack",
                   "inputs": {"lora_name": LORAS["style"], "weight": rng.choice([0.5, 0.8]), "role": "style",
                              "stack": ["10", 0]}}}


def build_prompt(kind: str, rng: random.Random, index: int) -> tuple[dict | bytes, str]:
    """``(prompt or raw body, expected outcome: "success" | "refused")`` for one soak step."""
    prompt: dict = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}}}
    if kind == "load":
        prompt["2"] = {"class_type": "LCMPack_LCMLoraLoader",
                       "inputs": {"lora_name": LORAS[rng.choice(["lcm", "tcd"])], "strength": rng.choice([1.0, 0.8]),
                                  "allow_partial": False, "model": ["1", 0], "clip": ["1", 1]}}
        return prompt | _sampling_graph(rng, ["2", 0]), "success"
    if kind in ("mix", "export"):
        prompt |= _stack(rng)
        prompt["2"] = {"class_type": "LCMPack_LoraMixer",
                       "inputs": {"model": ["1", 0], "stack": ["11", 0], "style_normalization": "none",
                                  "allow_partial": False, "clip": ["1", 1]}}
        prompt |= _sampling_graph(rng, ["2", 0])
    if kind == "export":  # the mix is previewed and exported by one graph
        prompt["12"] = {"class_type": "LCMPack_LoraExport",
                        "inputs": {"model": ["1", 0], "stack": ["11", 0], "filename": f"soak-export-{index % 3}",
                                   "mode": rng.choice(["concat", "svd"]), "rank": rng.choice([4, 8, 12]),
                                   "overwrite": True, "clip": ["1", 1]}}
    if kind in ("mix", "export"):
        return prompt, "success"
    return bad_prompt(BAD_CASES[index % len(BAD_CASES)], rng), "refused"


def bad_prompt(case: str, rng: random.Random) -> dict | bytes:
    if case == "malformed-json":
        return b'{"prompt": {"1": '
    prompt, _ = build_prompt("load", rng, 0)
    loader = prompt["2"]["inputs"]
    if case == "missing-file":
        loader["lora_name"] = "does-not-exist.safetensors"
    elif case == "out-of-range":
        loader["strength"] = 1e6
    elif case == "unknown-node":
        prompt["2"]["class_type"] = "LCMPack_NoSuchNode"
    elif case == "corrupt-lora":
        loader["lora_name"] = LORAS["broken"]
    elif case == "zero-steps":
        prompt["6"]["inputs"]["steps"] = 0
    return prompt


@dataclass
class Soak:
    server: ComfyServer
    samples: list[dict] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def send(self, body: dict | bytes, timeout: float = 300) -> str:
        """Run one prompt the way a client does (scripts/automation_example.py: websocket, POST, follow, download).

        ``"success"``, ``"error"`` (accepted, then failed while running) or ``"refused"`` (an HTTP error status:
        400 for an invalid prompt; ComfyUI 0.3.75 answers malformed JSON with a 500).
        """
        if isinstance(body, bytes):
            status, _ = post(self.server.url + "/prompt", body)
            return "success" if status == 200 else "refused"
        images = self.server.base / "soak-images"
        try:
            asyncio.run(automation_example.run_workflow(self.server.url, body, images, timeout=timeout))
            return "success"
        except automation_example.PromptRejected:
            return "refused"
        except automation_example.PromptFailed:
            return "error"
        finally:
            shutil.rmtree(images, ignore_errors=True)

    def sample(self, index: int, started: float) -> None:
        import psutil

        process = psutil.Process(self.server.process.pid)
        with process.oneshot():
            self.samples.append({"prompts": index, "seconds": time.monotonic() - started,
                                 "rss_mib": process.memory_info().rss / 2**20, "open_files": len(process.open_files()),
                                 "fds": process.num_fds(), "threads": process.num_threads()})


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """POST ``body`` as is (malformed JSON included); ``(status, response body)``."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run(options) -> Soak:
    work = Path(options.workdir or tempfile.mkdtemp(prefix="lcmpack-soak-"))
    models = write_models(work / "models", options.checkpoint)
    server = ComfyServer(base=work / "base", model_store=models)
    server.start()
    soak, rng, started = Soak(server), random.Random(options.seed), time.monotonic()
    try:
        soak.sample(0, started)
        for index in range(1, options.prompts + 1):
            kind = rng.choice(KINDS)
            body, expected = build_prompt(kind, rng, index)
            sent = time.monotonic()
            outcome = soak.send(body)
            soak.seconds.setdefault(kind, []).append(time.monotonic() - sent)
            soak.outcomes[f"{kind}:{outcome}"] = soak.outcomes.get(f"{kind}:{outcome}", 0) + 1
            if (outcome == "success") != (expected == "success"):
                soak.unexpected.append(f"#{index} {kind}: {outcome} (expected {expected})")
            if index % options.sample_every == 0 or index == options.warmup:
                soak.sample(index, started)
            if time.monotonic() - started > options.max_seconds:
                print(f"stopped by --max-seconds after {index} prompts", flush=True)
                soak.sample(index, started)
                break
    finally:
        server.stop()
    return soak


def verdict(soak: Soak, options) -> list[str]:
    """The bounds broken (empty: all held)."""
    base = next((s for s in soak.samples if s["prompts"] >= options.warmup), None)
    if base is None:
        return [f"fewer than --warmup {options.warmup} prompts ran: nothing to compare"]
    later = [s for s in soak.samples if s["prompts"] > base["prompts"]] or [base]
    problems = []
    rss_growth = max(s["rss_mib"] for s in later) - base["rss_mib"]
    fd_growth = max(s["fds"] for s in later) - base["fds"]
    if rss_growth > options.rss_growth_mib:
        problems.append(f"RSS grew {rss_growth:.0f} MiB after prompt {base['prompts']} "
                        f"(bound {options.rss_growth_mib} MiB)")
    if fd_growth > options.fd_growth:
        problems.append(f"open descriptors grew by {fd_growth} after prompt {base['prompts']} "
                        f"(bound {options.fd_growth})")
    if soak.unexpected:
        problems.append(f"{len(soak.unexpected)} unexpected outcomes, e.g. {soak.unexpected[:3]}")
    return problems


def report(soak: Soak, options) -> str:
    lines = ["| prompts | elapsed s | RSS MiB | open files | fds | threads |", "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['prompts']} | {s['seconds']:.0f} | {s['rss_mib']:.0f} | {s['open_files']} | {s['fds']} | "
              f"{s['threads']} |" for s in soak.samples]
    lines.append("")
    lines.append("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(soak.outcomes.items())))
    lines.append("median seconds per prompt: " + ", ".join(
        f"{kind} {statistics.median(values):.2f}" for kind, values in sorted(soak.seconds.items())))
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=1500)
    parser.add_argument("--warmup", type=int, default=100, help="prompts before the baseline sample")
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--rss-growth-mib", type=float, default=256)
    parser.add_argument("--fd-growth", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", type=Path, help="an existing tiny SD1.5 checkpoint to link (else generated)")
    parser.add_argument("--workdir", help="folder for models and the server's base directory (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stop the server on the way out
    soak = run(options)
    print(report(soak, options), flush=True)
    problems = verdict(soak, options)
    for problem in problems:
        print("BOUND BROKEN:", problem, flush=True)
    print("soak:", "FAILED" if problems else "bounded", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
