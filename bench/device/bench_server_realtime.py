"""The real-time nodes through a real ComfyUI ``main.py`` server on the GPU, with ComfyUI's own allocator settings
(issue 29 item 0: the server must survive every mode; item 3: both VRAM modes; issue 21: LoRA parity pack vs core
(``--parity``), a distillation run and a merged export (``--distill STEPS``) in each VRAM mode).

One server per configuration (``--config``): ``default`` (what ``python main.py`` does: Dynamic VRAM where the
host has it, ``cudaMallocAsync``), ``no-dynamic`` (``--disable-dynamic-vram``), ``no-cuda-malloc``
(``--disable-cuda-malloc``: PyTorch's native allocator), ``native-static`` (both flags). The client queues, over
HTTP as a live client does, the same graph with a new seed each time -- full-size random SD1.5 checkpoint
(fp16), ``LCMPack_LCMLoraLoader`` → [``LCMPack_LCMFastPath``] → ``LCMPack_KSamplerLCM`` (4 steps, cfg 1, 512²)
→ ``VAEDecode`` / ``LCMPack_FastVAEDecode`` → ``PreviewImage`` -- in three arms: eager, ``cuda_graph``,
``compile_cuda_graph``; times POST → image bytes back (websocket + ``/view``, ``live_client.py``), compares each image with the
eager arm's for the same seed, checks the server is alive after every job, and keeps the pack's report lines
and any fatal line from the server log.

    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=.pack python -m lcm_lora_pack.bench.device.bench_server_realtime \\
        --config default --base /tmp/rt-base --json out/server-default.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from lcm_lora_pack.bench.device.live_client import WAITS, Client
from lcm_lora_pack.bench.device.live_graphs import ARMS, GRAPHS, IMAGE_OUTS, build, phase_table, prepare_live, table

CONFIGS = {"default": [], "no-dynamic": ["--disable-dynamic-vram"], "no-cuda-malloc": ["--disable-cuda-malloc"],
           "native-static": ["--disable-cuda-malloc", "--disable-dynamic-vram"]}
CKPT, LORA, STYLE = "rt-sd15-random.safetensors", "rt-sd15-lcm.safetensors", "rt-sd15-style.safetensors"
# LoRA application through the server (core KSampler euler, 4 steps, cfg 1: core sampling, only the LoRA path
# differs): the pack's loader (kind style: weights only) and mixer against core's LoraLoaderModelOnly.
PARITY = {
    "core LoraLoaderModelOnly 1.0": [("core", LORA, 1.0)],
    "pack LCMLoraLoader 1.0": [("pack", LORA, 1.0)],
    "core LoraLoaderModelOnly 0.5": [("core", LORA, 0.5)],
    "pack LCMLoraLoader 0.5": [("pack", LORA, 0.5)],
    "core LoraLoaderModelOnly ×2 (1.0, 0.8)": [("core", LORA, 1.0), ("core", STYLE, 0.8)],
    "pack LoraStack ×2 → LoraMixer (1.0, 0.8)": [("mix", LORA, 1.0), ("mix", STYLE, 0.8)],
}
PAIRS = (("pack LCMLoraLoader 1.0", "core LoraLoaderModelOnly 1.0"),
         ("pack LCMLoraLoader 0.5", "core LoraLoaderModelOnly 0.5"),
         ("pack LCMLoraLoader 0.5", "pack LCMLoraLoader 1.0"),
         ("pack LoraStack ×2 → LoraMixer (1.0, 0.8)", "core LoraLoaderModelOnly ×2 (1.0, 0.8)"))
FATAL = ("terminate called", "Segmentation fault", "CUDA error", "AcceleratorError", "Aborted", "Traceback")


SMOKE = {"on": False}  # --smoke: CPU server, the devkit's tiny SD1.5-family checkpoint, 64² (checks the script)
IMAGE_OUT = {"kind": "preview"}  # --image-out: how the graphs' image node gives the image back (live_graphs)


def prepare_smoke(base: Path) -> None:
    from lcm_lora_pack.devkit import loras
    from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG, write_sd15_checkpoint

    write_sd15_checkpoint(base / "models/checkpoints" / CKPT)
    loras.make_kohya_lora(SD15_UNET_CONFIG, base / "models/loras" / LORA, rank=4, alpha=4, kind="lcm")
    loras.make_kohya_lora(SD15_UNET_CONFIG, base / "models/loras" / STYLE, rank=4, alpha=4, seed=3)


CLIENT_NODES = Path(__file__).resolve().parent / "client_nodes"  # the live graphs' inline-canvas node (krita's way)


def server_base(base: Path, pack: Path | None = None) -> Path:
    """A ``main.py --base-directory`` folder: its working folders, a stand-in frontend, the bench's client node
    and, when ``pack`` is given, the pack linked into ``custom_nodes``."""
    for sub in ("custom_nodes", "input", "output", "temp", "user", "web"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "web" / "index.html").write_text("<html></html>")
    links = {"lcm-bench-client": CLIENT_NODES, **({"lcm-lora-pack": pack.resolve()} if pack else {})}
    for name, target in links.items():
        if not (base / "custom_nodes" / name).exists():
            (base / "custom_nodes" / name).symlink_to(target, target_is_directory=True)
    return base


def prepare(base: Path, pack: Path, sdxl: bool = False) -> None:
    """Base directory with the pack linked, a full-size random SD1.5 checkpoint (UNet + SD VAE + CLIP-L, fp16)
    and an LCM-LoRA-shaped file (rank 64, kohya keys); ``sdxl``: graph (c)'s SDXL models too. Built in this
    process, before any server starts."""
    server_base(base, pack)
    for sub in ("models/checkpoints", "models/loras"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    if (base / "models/checkpoints" / CKPT).exists():
        return prepare_live(base, SMOKE["on"], sdxl)
    if SMOKE["on"]:
        prepare_smoke(base)
        return prepare_live(base, True, sdxl)
    import torch
    from lcm_lora_pack.devkit.host import prepare_import
    from lcm_lora_pack.devkit.models import build_clip_l_state_dict
    from safetensors.torch import save_file

    prepare_import("cuda")
    from diffusers import UNet2DConditionModel
    from lcm_lora_pack.bench import lora_files, synthetic

    family = synthetic.FAMILIES["sd15"]
    with torch.device("meta"):
        unet_meta = UNet2DConditionModel(**family.unet_config)
    checkpoint = {**synthetic.checkpoint_unet(unet_meta, family.unet_config, "cuda"),
                  **synthetic.checkpoint_vae("cuda")}
    checkpoint.update({k: (v.half() if v.is_floating_point() else v) for k, v in build_clip_l_state_dict(2).items()})
    save_file(checkpoint, str(base / "models/checkpoints" / CKPT))
    lora = lora_files.lora_state_dict(unet_meta, lora_files.LCM_TARGETS, 64, 8.0, 11, "cuda")
    lora_files.write_lora(base / "models/loras" / LORA, lora)
    style = lora_files.lora_state_dict(unet_meta, lora_files.STYLE_TARGETS, 32, 16.0, 12, "cuda")
    lora_files.write_lora(base / "models/loras" / STYLE, style)
    prepare_live(base, False, sdxl)


def graph(arm: str, seed: int, name: str = "lcm") -> dict:
    """Graph ``name`` of ``live_graphs.GRAPHS`` in ``arm``, for ``seed`` (the image node is "9")."""
    return build(name, arm, seed, CKPT, LORA, SMOKE["on"], IMAGE_OUT["kind"])


def sampled_graph_nodes() -> dict:
    """The nodes around a sampler "7": checkpoint "1", prompt "3", empty negative "4", empty latent "5"
    (512², 64² in smoke runs), ``VAEDecode`` "8" of the sampler's latent, ``PreviewImage`` "9"."""
    side = 64 if SMOKE["on"] else 512
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a live painting", "clip": ["1", 1]}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
            "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}}


def parity_graph(chain: list[tuple[str, str, float]], seed: int) -> dict:
    """Checkpoint → the chain's LoRA nodes → core KSampler (euler, 4 steps, cfg 1) → VAEDecode → PreviewImage."""
    prompt = sampled_graph_nodes()
    model, stack = ["1", 0], None
    for index, (how, name, strength) in enumerate(chain):
        node = f"2{index}"
        if how == "core":
            prompt[node] = {"class_type": "LoraLoaderModelOnly",
                            "inputs": {"model": model, "lora_name": name, "strength_model": strength}}
            model = [node, 0]
        elif how == "pack":
            prompt[node] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
                "model": model, "lora_name": name, "strength": strength, "allow_partial": False, "kind": "style"}}
            model = [node, 0]
        else:
            inputs = {"lora_name": name, "weight": strength, "role": "style"}
            if stack is not None:
                inputs["stack"] = stack
            prompt[node] = {"class_type": "LCMPack_LoraStack", "inputs": inputs}
            stack = [node, 0]
    if stack is not None:
        prompt["29"] = {"class_type": "LCMPack_LoraMixer", "inputs": {
            "model": model, "stack": stack, "style_normalization": "none", "allow_partial": False}}
        model = ["29", 0]
    prompt["7"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": seed,
        "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    return prompt


def distill_graph(output_name: str, steps: int) -> dict:
    """Checkpoint → ``LCMPack_DistillLCMLoRA`` in prompts (data-free) mode: ``steps`` optimizer steps, rank 16."""
    side, smoke = (64, True) if SMOKE["on"] else (512, False)
    options = dict(max_train_steps=steps, train_batch_size=2, learning_rate=1e-4, lora_rank=16, lora_alpha=16.0,
                   resolution=side, w_min=3.0, w_max=15.0, num_ddim_timesteps=50, loss_type="huber", huber_c=0.001,
                   mixed_precision="no" if smoke else "fp16", gradient_checkpointing=False, seed=0,
                   checkpointing_steps=steps, resume=False, center_crop=False, random_flip=False,
                   teacher_sampling_steps=2 if smoke else 4)
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "2": {"class_type": "LCMPack_DistillLCMLoRA", "inputs": {
                "model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "output_name": output_name, "data_dir": "",
                "prompts": "a red circle\na blue square", **options}}}


def export_graph(filename: str) -> dict:
    """The LCM-LoRA (1.0) and the style LoRA (0.8) stacked → ``LCMPack_LoraExport`` concat (exact)."""
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
            "21": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": LORA, "weight": 1.0,
                                                                 "role": "accelerator"}},
            "22": {"class_type": "LCMPack_LoraStack", "inputs": {"lora_name": STYLE, "weight": 0.8,
                                                                 "role": "style", "stack": ["21", 0]}},
            "23": {"class_type": "LCMPack_LoraExport", "inputs": {
                "model": ["1", 0], "stack": ["22", 0], "filename": filename, "mode": "concat", "rank": 64,
                "overwrite": False}}}


def run_training(client: Client, steps: int, seed: int = 7) -> dict:
    """A distillation run and a merged export through the server, then the distilled LoRA sampled through the
    pack's loader (issue 21: "a distillation step and an export run" in each VRAM mode)."""
    tag = uuid.uuid4().hex[:8]
    result = {}
    for name, prompt in (("distill", distill_graph(f"dv-distilled-{tag}", steps)),
                         ("export", export_graph(f"dv-export-{tag}"))):
        seconds, _, status = client.run(prompt, timeout=900.0)
        result[name] = {"seconds": round(seconds, 2), "status": "success" if status.startswith("success") else status[:300]}
    for name, lora in (("distilled LoRA sampled", f"dv-distilled-{tag}.safetensors"),
                       ("exported mix sampled", f"dv-export-{tag}.safetensors")):
        seconds, image, status = client.run(parity_graph([("pack", lora, 1.0)], seed))
        result[name] = {"seconds": round(seconds, 2), "status": status[:300], "image": image is not None}
    result["alive_after"] = client.alive()
    return result


def run_parity(client: Client, seed: int = 7) -> dict:
    """Each chain once (same seed); max pixel difference of each pair (0-255) and job statuses."""
    images, statuses = {}, {}
    for name, chain in PARITY.items():
        _, images[name], statuses[name] = client.run(parity_graph(chain, seed))
    diffs = {f"{a} vs {b}": (max_pixel_diff(images[a], images[b]) if images[a] and images[b] else None)
             for a, b in PAIRS}
    return {"parity_max_pixel_diff": diffs, "statuses": statuses, "alive_after": client.alive()}


def max_pixel_diff(a: bytes, b: bytes) -> int:
    import numpy as np
    from PIL import Image

    first, second = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=np.int16) for x in (a, b))
    return int(np.abs(first - second).max())


def host_flags(comfy: Path, flags: list[str]) -> list[str]:
    """The ``flags`` this ComfyUI's ``main.py`` has (``--disable-dynamic-vram`` exists from 0.16 on; a host
    without it has no Dynamic VRAM to disable): ``main.py`` exits on an unknown flag."""
    known = (comfy / "comfy" / "cli_args.py").read_text()
    return [flag for flag in flags if f'"{flag}"' in known]


def start_server(comfy: Path, base: Path, port: int, flags: list[str], log: Path) -> subprocess.Popen:
    flags = host_flags(comfy, flags)
    command = [sys.executable, str(comfy / "main.py"), "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--front-end-root", str(base / "web"), "--disable-auto-launch",
               *flags]
    handle = log.open("w")
    server = subprocess.Popen(command, cwd=comfy, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ))
    client = Client(port, wait="poll")
    deadline = time.time() + 240
    while time.time() < deadline and server.poll() is None and not client.alive():
        time.sleep(0.5)
    return server


def log_lines(log: Path) -> tuple[list[str], list[str]]:
    text = log.read_text(errors="replace").splitlines()
    pack = list(dict.fromkeys(line.strip() for line in text if "LCM fast" in line))
    fatal = [line.strip() for line in text if any(mark in line for mark in FATAL)]
    return pack, fatal


def run_arm(client: Client, name: str, arm: str, seeds: list[int], eager_images: dict) -> dict:
    """Graph ``name`` in ``arm``: the first call (capture / compile) timed apart, then one call per seed; each
    image compared with the eager arm's image of the same graph and seed (max pixel difference, 0-255)."""
    first_s, image, status = client.run(graph(arm, seeds[0], name))
    result = {"graph": name, "arm": arm, "first_s": round(first_s, 3), "status": status, "times_ms": [],
              "max_pixel_diff": None}
    images, phases = {seeds[0]: image}, []
    for seed in seeds[1:]:
        if not client.alive():
            break
        seconds, image, status = client.run(graph(arm, seed, name))
        result["times_ms"].append(round(seconds * 1e3, 1))
        phases.append(client.last_phases)
        result["status"] = status if status != "success" else result["status"]
        images[seed] = image
    result["alive_after"] = client.alive()
    if arm == "eager":
        eager_images[name] = images
    elif all(images.get(s) and eager_images.get(name, {}).get(s) for s in seeds):
        result["max_pixel_diff"] = max(max_pixel_diff(images[s], eager_images[name][s]) for s in seeds)
    times = result["times_ms"]
    result["median_ms"] = statistics.median(times) if times else None
    result["phases_ms"] = median_phases(phases)
    return result


def median_phases(per_call: list[dict | None]) -> dict[str, float] | None:
    """Median ms of each phase over the timed calls (``live_client.phases``; None without the websocket)."""
    calls = [p for p in per_call if p]
    if not calls or len(calls) != len(per_call):
        return None
    names = [name for name in calls[0] if all(name in p for p in calls)]
    return {name: round(statistics.median(p[name] for p in calls), 1) for name in names}


def plan(graphs: str, arms: str) -> list[tuple[str, str]]:
    """(graph, arm) pairs in order: ``graphs`` "a,b:eager+cuda_graph" (b with its own arms), ``arms`` the rest's."""
    pairs = []
    for spec in filter(None, graphs.split(",")):
        name, _, own = spec.partition(":")
        pairs += [(name, arm) for arm in (own.split("+") if own else arms.split(",")) if arm]
    return pairs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=tuple(CONFIGS), default="default")
    parser.add_argument("--base", type=Path, default=Path("/tmp/rt-base"))
    parser.add_argument("--pack", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--calls", type=int, default=6, help="jobs per arm (the first, with capture, timed apart)")
    parser.add_argument("--arms", default="eager,cuda_graph,compile_cuda_graph",
                        help=f"arms of each graph, from {','.join(ARMS)} (eager first: the others compare with it)")
    parser.add_argument("--graphs", default="lcm", help=f"graphs, from {','.join(GRAPHS)} and live@SAMPLER / "
                        "live-nocn@SAMPLER; GRAPH:ARM+ARM sets that graph's arms")
    parser.add_argument("--wait", choices=WAITS, default="ws",
                        help="how the client learns a job is done: the websocket (live clients' way) or /history polling")
    parser.add_argument("--image-out", choices=tuple(IMAGE_OUTS), default="preview",
                        help="the image node: core PreviewImage (+ /view), or sent over the websocket (krita's way; "
                        "needs --wait ws)")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--parity", action="store_true", help="first run the LoRA parity graphs (pack vs core)")
    parser.add_argument("--distill", type=int, default=0, metavar="STEPS",
                        help="then a distillation run of STEPS steps and an export through the server")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU server, tiny checkpoint, 64² (checks the script)")
    args = parser.parse_args(argv)
    SMOKE["on"], IMAGE_OUT["kind"] = args.smoke, args.image_out
    if args.image_out != "preview" and args.wait != "ws":
        parser.error("--image-out ws-* needs --wait ws (the image comes over the websocket)")
    if args.prepare_only:  # graph (c)'s SDXL models only when --graphs asks for an SDXL graph
        prepare(args.base, args.pack, sdxl=any("sdxl" in name for name, _ in plan(args.graphs, args.arms)))
        return 0
    comfy = Path(os.environ["COMFYUI_PATH"])
    log = args.base / f"server-{args.config}.log"
    flags = CONFIGS[args.config] + (["--cpu"] if args.smoke else [])
    server = start_server(comfy, args.base, args.port, flags, log)
    client, results, eager_images = Client(args.port, args.wait), [], {}
    seeds = list(range(100, 100 + args.calls))
    try:
        if not client.alive():
            raise RuntimeError(f"server did not start (rc {server.poll()})")
        if args.parity:
            results.append(run_parity(client))
            print("PARITY", args.config, json.dumps(results[-1]), flush=True)
        if args.distill:
            results.append({"training": run_training(client, args.distill)})
            print("TRAINING", args.config, json.dumps(results[-1]), flush=True)
        for name, arm in plan(args.graphs, args.arms):
            results.append(run_arm(client, name, arm, seeds, eager_images))
            print("ARM", args.config, json.dumps(results[-1]), flush=True)
            if args.json:  # after every arm: a run stopped at its time limit keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"config": args.config, "arms": results}, indent=1))
            if not results[-1]["alive_after"]:
                break
    except Exception as error:  # noqa: BLE001  (the report must still say what happened to the server)
        results.append({"error": f"{type(error).__name__}: {error}"})
    finally:
        client.close()
        survived = server.poll() is None
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    pack_lines, fatal = log_lines(log)
    summary = {"config": args.config, "flags": host_flags(comfy, CONFIGS[args.config]), "server_survived": survived,
               "server_rc": None if survived else server.returncode, "arms": results, "pack_lines": pack_lines[:20],
               "fatal_lines": fatal[:20]}
    print("SERVER", json.dumps(summary), flush=True)
    print(f"TABLE {args.config}\n{table(results)}", flush=True)
    print(f"PHASES {args.config}\n{phase_table(results)}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
