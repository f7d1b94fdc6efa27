#!/usr/bin/env python3
"""Measure the path of a LoRA's data through the code: the files it passes through, and the returns to a file
already visited, for the LCM-LoRA Loader (one file) and the LoRA Mixer (LCM + style), in real ComfyUI (CPU).

Each node runs once on a tiny generated SD1.5-family model with ``sys.setprofile`` on. Every Python call whose
caller and callee both lie in the pack (or in core's LoRA code: ``comfy/lora.py``, ``comfy/weight_adapter/``)
is a step of the trip, counted once per distinct call site pair (a loop over 40 layers is one step, not 40);
the trip stays in the callee's file and, when the next call is made from another file, it has come back there
first. Consecutive stays in one file are one stay. Printed per node: the stays in
order, the number of distinct files, and the number of returns (stays in a file the trip had already left).
The file reads are warmed up first (the pack caches parsed files), so both runs measure the same cached path.

``--pack DIR`` measures another checkout of the pack (e.g. an earlier commit, to compare before and after)::

    PYTHONPATH=.pack .venv/bin/python scripts/trace_lora_path.py
    git worktree add /tmp/pack-before <commit>
    PYTHONPATH=.pack .venv/bin/python scripts/trace_lora_path.py --pack /tmp/pack-before
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from lcm_lora_pack.devkit import host, loras, models

PACK_LINK = "custom_nodes/" + host.PACK_FOLDER_NAME + "/"
CORE_LORA_FILES = ("comfy/lora.py", "comfy/weight_adapter/")
CKPT = "tiny-sd15.safetensors"
LCM, STYLE = "trace-lcm.safetensors", "trace-style.safetensors"


def _tracked(filename: str, comfy_root: str) -> str | None:
    """The file's path shown in the trip (pack-relative, or ``comfy/…`` for core's LoRA code), else None."""
    if PACK_LINK in filename:
        return filename.split(PACK_LINK, 1)[1]
    if filename.startswith(comfy_root):
        relative = filename[len(comfy_root):].lstrip("/")
        return relative if relative.startswith(CORE_LORA_FILES) else None
    return None


def trace(run, comfy_root: str) -> list[str]:
    """The stays of one call of ``run()``: a file per stay, consecutive stays in one file merged."""
    stays: list[str] = []
    seen: set[tuple] = set()

    def profile(frame, event, _arg):
        if event != "call" or frame.f_back is None:
            return
        callee = _tracked(frame.f_code.co_filename, comfy_root)
        caller = _tracked(frame.f_back.f_code.co_filename, comfy_root)
        edge = (frame.f_back.f_code, frame.f_back.f_lineno, frame.f_code)
        if callee is None or caller is None or edge in seen:
            return
        seen.add(edge)
        for file in (caller, callee):
            if not stays or stays[-1] != file:
                stays.append(file)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stays


def summary(name: str, stays: list[str]) -> str:
    returns = sum(1 for i, file in enumerate(stays) if file in stays[:i])
    return (f"{name}: {len(set(stays))} files, {len(stays)} stays, {returns} returns to a file already visited\n  "
            + " -> ".join(stays))


def boot(pack: Path | None) -> host.ComfyHost:
    base = Path(tempfile.mkdtemp(prefix="lcmpack-trace-"))
    if pack is not None:  # link the other checkout before make_base_directory links this one
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / host.PACK_FOLDER_NAME).symlink_to(pack.resolve(), target_is_directory=True)
    host.make_base_directory(base)
    models.write_sd15_checkpoint(base / "models" / "checkpoints" / CKPT, seed=0)
    loras.make_kohya_lora(models.SD15_UNET_CONFIG, base / "models" / "loras" / LCM, rank=8, alpha=4.0, seed=1,
                          kind="lcm")
    loras.make_kohya_lora(models.SD15_UNET_CONFIG, base / "models" / "loras" / STYLE, rank=4, alpha=1.0, seed=2)
    return host.boot(base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, help="another checkout of the pack to measure (default: this one)")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    comfy = boot(options.pack)
    root = str(comfy.root)
    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=CKPT)[:2]

    def loader():
        comfy.run_node("LCMPack_LCMLoraLoader", model=model, clip=clip, lora_name=LCM, strength=1.0,
                       allow_partial=False)

    def mixer():
        stack = None
        for name, weight, role in ((LCM, 1.0, "accelerator"), (STYLE, 0.8, "style")):
            (stack,) = comfy.run_node("LCMPack_LoraStack", lora_name=name, weight=weight, role=role, stack=stack)
        comfy.run_node("LCMPack_LoraMixer", model=model, clip=clip, stack=stack, style_normalization="none",
                       allow_partial=False)

    loader(), mixer()  # warm-up: files parsed and cached
    print(f"pack: {options.pack or host.REPO}")
    print(summary("LCM-LoRA Loader", trace(loader, root)))
    print(summary("LoRA Mixer (LCM + style)", trace(mixer, root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
