"""Which job sequence ends a ComfyUI 0.33 server under Dynamic VRAM (issue 21, run DV4's crash).

Run DV4 saw ``main.py`` with its defaults (Dynamic VRAM, ``cudaMallocAsync``) die with a device-side
``index out of bounds`` assert in the first step of ``LCMLoraLoader (kind lcm) → KSampler (LCM)`` after other
jobs had sampled the same checkpoint, while the same graph as a fresh server's first job succeeded (DV2). Each
sequence below runs in a fresh server with ``CUDA_LAUNCH_BLOCKING=1`` (so the Python stack in the log is the
failing kernel's), and the report says which job of which sequence killed the server, with the last pack and core
frames of the stack. Sequences separate core's own path (``LoraLoaderModelOnly`` + ``ModelSamplingDiscrete lcm``
+ core ``KSampler``) from the pack's loader and from ``KSampler (LCM)``.

Found by reading 0.33.0 (``host/comfy_dynamic_tables.py``): Dynamic VRAM restores the model's buffers by attribute
path across object patches, so ``model_sampling`` objects swap σ tables between jobs. The ``plain-*`` sequences end
with the same plain job (fixed seed) as ``plain-first``'s only job; the report gives each image's digest and
whether it equals that fresh-server image (``same_as_fresh``): after an LCM job the checkpoint's own sampling
must be untouched.

    COMFYUI_PATH=… PYTHONPATH=.pack python -m lcm_lora_pack.bench.device.bench_dv_sequences --base /tmp/rt-base
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from .bench_server_realtime import (
    CONFIGS,
    LORA,
    SMOKE,
    Client,
    distill_graph,
    export_graph,
    parity_graph,
    prepare,
    sampled_graph_nodes,
    start_server,
)


def lcm_graph(loader: str, sampler: str, seed: int) -> dict:
    """The LCM-LoRA by ``loader`` (core: ``LoraLoaderModelOnly`` + ``ModelSamplingDiscrete lcm``; pack:
    ``LCMLoraLoader`` kind auto) sampled by ``sampler`` (core: ``KSampler`` lcm/simple; pack: ``KSampler (LCM)``)."""
    prompt = sampled_graph_nodes()
    if loader == "core":
        prompt["2"] = {"class_type": "LoraLoaderModelOnly",
                       "inputs": {"model": ["1", 0], "lora_name": LORA, "strength_model": 1.0}}
        prompt["6"] = {"class_type": "ModelSamplingDiscrete",
                       "inputs": {"model": ["2", 0], "sampling": "lcm", "zsnr": False}}
    else:
        prompt["6"] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
            "model": ["1", 0], "lora_name": LORA, "strength": 1.0, "allow_partial": False}}
    common = {"model": ["6", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
              "seed": seed, "steps": 4, "cfg": 1.0, "denoise": 1.0}
    if sampler == "core":
        prompt["7"] = {"class_type": "KSampler", "inputs": {**common, "sampler_name": "lcm", "scheduler": "simple"}}
    else:
        prompt["7"] = {"class_type": "LCMPack_KSamplerLCM", "inputs": {**common, "sampler": "lcm", "gamma": 0.3}}
    return prompt


PLAIN = ("plain checkpoint, core KSampler euler", lambda seed: parity_graph([], seed))
STYLE = ("pack LCMLoraLoader kind style, core KSampler euler", lambda seed: parity_graph([("pack", LORA, 1.0)], seed))
CORE_LORA = ("core LoraLoaderModelOnly, core KSampler euler", lambda seed: parity_graph([("core", LORA, 1.0)], seed))
EXPORT = ("LoraExport concat (no image)", lambda seed: export_graph(f"dv-seq-export-{seed}"))
DISTILL = ("distillation node, 10 steps (no image)", lambda seed: distill_graph(f"dv-seq-distill-{seed}", 10))
PLAIN_REFERENCE = ("plain checkpoint, core KSampler euler, seed 7", lambda seed: parity_graph([], 7))


def _lcm(loader: str, sampler: str):
    return (f"LCM-LoRA by {loader} loader, {sampler} LCM sampler", lambda seed: lcm_graph(loader, sampler, seed))


SEQUENCES = {
    "core-after-plain": [PLAIN, _lcm("core", "core")],
    "core-after-core-lora": [CORE_LORA, _lcm("core", "core")],
    "pack-loader-core-sampler-after-plain": [PLAIN, _lcm("pack", "core")],
    "pack-after-plain": [PLAIN, _lcm("pack", "pack")],
    "pack-after-style": [STYLE, _lcm("pack", "pack")],
    "pack-twice": [_lcm("pack", "pack"), _lcm("pack", "pack")],
    "pack-after-export": [EXPORT, _lcm("pack", "pack")],
    "pack-after-distill": [DISTILL, _lcm("pack", "pack")],
    "core-after-distill": [DISTILL, _lcm("core", "core")],
    "plain-first": [PLAIN_REFERENCE],
    "plain-after-pack": [_lcm("pack", "pack"), PLAIN_REFERENCE],
    "plain-after-core-lcm": [_lcm("core", "core"), PLAIN_REFERENCE],
}


def stack_tail(log: Path) -> list[str]:
    """The Python frames of a fatal error in the server log (innermost first), without the asyncio/thread frames."""
    lines = log.read_text(errors="replace").splitlines()
    marks = [i for i, line in enumerate(lines) if "most recent call first" in line]
    if not marks:
        return [line.strip() for line in lines if "Error" in line][-5:]
    frames = []
    for line in lines[marks[-1] + 1:]:
        if not line.startswith("  File"):
            break
        if "asyncio" not in line and "threading" not in line:
            frames.append(line.strip()[:220])
    return frames[:12]


def run_sequence(name: str, jobs: list, args) -> dict:
    log = args.base / f"server-seq-{name}.log"
    server = start_server(Path(os.environ["COMFYUI_PATH"]), args.base, args.port, CONFIGS[args.config]
                          + (["--cpu"] if args.smoke else []), log)
    client, steps = Client(args.port, wait="poll"), []  # the job order matters here, not the timing
    try:
        for index, (label, build) in enumerate(jobs):
            try:
                seconds, image, status = client.run(build(100 + index), timeout=300.0)
            except OSError as error:
                status, image, seconds = f"{type(error).__name__}: {error}", None, 0.0
            steps.append({"job": label, "status": status[:200], "image": image is not None,
                          "digest": hashlib.sha256(image).hexdigest()[:16] if image else None,
                          "seconds": round(seconds, 2), "alive_after": client.alive()})
            if not steps[-1]["alive_after"]:
                break
    finally:
        survived = server.poll() is None
        server.terminate()
        server.wait(timeout=60)
    return {"sequence": name, "config": args.config, "survived": survived, "jobs": steps,
            "stack": [] if survived else stack_tail(log)}


def compare_with_fresh(results: list[dict]) -> None:
    """Mark each ``plain-after-*`` sequence's last image as equal or not to ``plain-first``'s (same job)."""
    fresh = next((r["jobs"][0]["digest"] for r in results if r["sequence"] == "plain-first" and r["jobs"]), None)
    for result in results:
        if result["sequence"].startswith("plain-after-") and result["jobs"] and fresh:
            result["same_as_fresh"] = result["jobs"][-1]["digest"] == fresh


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=tuple(CONFIGS), default="default")
    parser.add_argument("--base", type=Path, default=Path("/tmp/rt-base"))
    parser.add_argument("--port", type=int, default=8197)
    parser.add_argument("--sequences", default=",".join(SEQUENCES))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU server, tiny checkpoint, 64² (checks the script)")
    args = parser.parse_args(argv)
    SMOKE["on"] = args.smoke
    if not (args.base / "models").exists():
        prepare(args.base, Path(__file__).resolve().parents[2])
    os.environ.setdefault("CUDA_LAUNCH_BLOCKING", "1")
    results = []
    for name in [s for s in args.sequences.split(",") if s]:
        results.append(run_sequence(name, SEQUENCES[name], args))
        print("SEQUENCE", json.dumps(results[-1]), flush=True)
    compare_with_fresh(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
