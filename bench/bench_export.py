"""Benchmark: merged export of an SDXL-shaped LCM-LoRA + 2 style LoRAs (concat and SVD to rank 64).

Shapes are those of the SDXL UNet layers that the diffusers LCM-LoRA training script targets
(``train_lcm_distill_lora_sdxl.py``: to_q/k/v/out.0, proj_in/out, ff.net.0.proj/ff.net.2, resnet conv1/conv2/
conv_shortcut/time_emb_proj, down/upsampler convs), enumerated here without diffusers or ComfyUI so the
script runs on a bare GPU box with torch + safetensors. LoRAs: LCM rank 64 / alpha 8 on all of them
(like lcm-lora-sdxl), style A rank 32 on attention, style B rank 16 on attention + feed-forward.

What is timed (wall clock, median of --repeats, after one warm-up): ``lora.export.build_export`` (concat of
the three, truncated SVD via QR batched per shape group, cast to the save dtype, float64 measurement of the
error from the factors) and the atomic safetensors write of each file (``write_svd``: the rank-64 file,
``write_concat``: the lossless one), in ``--save-dtype`` (fp16 by default, like the node and the published
LoRAs). Usage::

    PYTHONPATH=.pack python bench/bench_export.py                   # CPU, full SDXL shapes
    PYTHONPATH=.pack python bench/bench_export.py --device cuda     # GPU
    PYTHONPATH=.pack python bench/bench_export.py --save-dtype fp32 # the fp32 files (twice the bytes)
    PYTHONPATH=.pack python bench/bench_export.py --smoke           # a few layers, one repeat
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lcm_lora_pack.lora.export import DEFAULT_SAVE_DTYPE, SAVE_DTYPES, build_export
from lcm_lora_pack.lora.mix import MixEntry
from lcm_lora_pack.lora.safe_write import atomic_save_safetensors
from lcm_lora_pack.lora.types import LoraModule, ResolvedLora

CROSS_DIM, TIME_DIM = 2048, 1280
ATTENTION = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
             "attn2.to_v", "attn2.to_out.0", "proj_in", "proj_out")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")


def _transformer(prefix: str, dim: int, depth: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.proj_in": (dim, dim), f"{prefix}.proj_out": (dim, dim)}
    for t in range(depth):
        block = f"{prefix}.transformer_blocks.{t}"
        for attn in ("attn1", "attn2"):
            context = dim if attn == "attn1" else CROSS_DIM
            shapes.update({f"{block}.{attn}.to_q": (dim, dim), f"{block}.{attn}.to_k": (dim, context),
                           f"{block}.{attn}.to_v": (dim, context), f"{block}.{attn}.to_out.0": (dim, dim)})
        shapes.update({f"{block}.ff.net.0.proj": (dim * 8, dim), f"{block}.ff.net.2": (dim, dim * 4)})
    return shapes


def _resnet(prefix: str, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"{prefix}.conv1": (c_out, c_in, 3, 3), f"{prefix}.conv2": (c_out, c_out, 3, 3),
              f"{prefix}.time_emb_proj": (c_out, TIME_DIM)}
    if c_in != c_out:
        shapes[f"{prefix}.conv_shortcut"] = (c_out, c_in, 1, 1)
    return shapes


def sdxl_layer_shapes() -> dict[str, tuple[int, ...]]:
    """diffusers name → weight shape of every SDXL UNet layer LCM-LoRA SDXL trains."""
    channels, depths = (320, 640, 1280), (0, 2, 10)
    shapes: dict[str, tuple[int, ...]] = {}
    skips, c_prev = [320], 320
    for b, (c, depth) in enumerate(zip(channels, depths, strict=True)):
        for i in range(2):
            shapes.update(_resnet(f"down_blocks.{b}.resnets.{i}", c_prev, c))
            if depth:
                shapes.update(_transformer(f"down_blocks.{b}.attentions.{i}", c, depth))
            c_prev = c
            skips.append(c)
        if b < 2:
            shapes[f"down_blocks.{b}.downsamplers.0.conv"] = (c, c, 3, 3)
            skips.append(c)
    shapes.update(_resnet("mid_block.resnets.0", 1280, 1280) | _resnet("mid_block.resnets.1", 1280, 1280))
    shapes.update(_transformer("mid_block.attentions.0", 1280, 10))
    for b, (c, depth) in enumerate(zip(reversed(channels), reversed(depths), strict=True)):
        for i in range(3):
            shapes.update(_resnet(f"up_blocks.{b}.resnets.{i}", c_prev + skips.pop(), c))
            if depth:
                shapes.update(_transformer(f"up_blocks.{b}.attentions.{i}", c, depth))
            c_prev = c
        if b < 2:
            shapes[f"up_blocks.{b}.upsamplers.0.conv"] = (c, c, 3, 3)
    return shapes


def make_lora(name: str, shapes: dict, rank: int, alpha: float, suffixes: tuple[str, ...] | None,
              seed: int, kind: str) -> ResolvedLora:
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for key, shape in shapes.items():
        if suffixes is not None and not key.endswith(suffixes):
            continue
        down = torch.randn((rank, *shape[1:]), generator=gen) / (shape[1] ** 0.5)
        up = torch.randn((shape[0], rank, *([1] * (len(shape) - 2))), generator=gen) * 0.01
        modules[key] = LoraModule(down=down.half(), up=up.half(), alpha=alpha)
    return ResolvedLora(name=name, sha256=f"{seed:064x}", format="kohya", family="sdxl", kind=kind, modules=modules)


def run(device: str, smoke: bool, repeats: int, rank: int,  # noqa: PLR0913 (command-line options)
        save_dtype: str = DEFAULT_SAVE_DTYPE) -> dict:
    shapes = sdxl_layer_shapes()
    if smoke:
        shapes = dict(list(shapes.items())[:24])
    entries = [MixEntry(make_lora("lcm-lora-sdxl", shapes, 64, 8.0, None, 1, "lcm"), 1.0, "accelerator"),
               MixEntry(make_lora("style-a", shapes, 32, 32.0, tuple(ATTENTION), 2, "style"), 0.8, "style"),
               MixEntry(make_lora("style-b", shapes, 16, 8.0, tuple(ATTENTION + FEED_FORWARD), 3, "style"), 0.8,
                        "style")]
    weights = [e.weight for e in entries]
    names = {key: "lora_unet_" + key.replace(".", "_") for key in shapes}
    timings: dict[str, list[float]] = {"svd": [], "concat": [], "write_svd": [], "write_concat": []}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(repeats + 1):  # attempt 0 is the warm-up
            for mode in ("svd", "concat"):
                _sync(device)
                start = time.perf_counter()
                result = build_export(entries, weights, mode, rank, names, device=device, save_dtype=save_dtype)
                _sync(device)
                if attempt:
                    timings[mode].append(time.perf_counter() - start)
                start = time.perf_counter()
                path = atomic_save_safetensors(result.tensors, result.metadata, folder, f"bench-{mode}{attempt}")
                if attempt:
                    timings[f"write_{mode}"].append(time.perf_counter() - start)
                sizes[mode] = path.stat().st_size
    svd = build_export(entries, weights, "svd", rank, names, device=device, save_dtype=save_dtype)
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or 'x86'}, "
                                                                          f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__, "layers": len(shapes), "smoke": smoke, "rank": rank, "save_dtype": save_dtype,
        "file_mib": {mode: round(size / 2**20, 1) for mode, size in sizes.items()},
        "lora_params_millions": round(sum(m.up.numel() + m.down.numel() for e in entries
                                          for m in e.lora.modules.values()) / 1e6, 1),
        "median_s": {k: round(statistics.median(v), 3) for k, v in timings.items()},
        "svd_total_relative_error": svd.report.total_error, "svd_worst_layer": svd.report.worst_layer,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--smoke", action="store_true", help="a few layers and one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--save-dtype", default=DEFAULT_SAVE_DTYPE, choices=tuple(SAVE_DTYPES),
                        help="dtype of the written factors (the export node's save_dtype)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 avoids OpenMP oversubscription on busy hosts")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    result = run(args.device, args.smoke, 1 if args.smoke else args.repeats, args.rank, args.save_dtype)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
