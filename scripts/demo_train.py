#!/usr/bin/env python3
"""Train the demo family (one command, fixed seeds): caption embeddings, autoencoder, classifier, teacher
UNet, style LoRA. The LCM-LoRA is distilled afterwards by the pack's trainer (scripts/demo_distill.py).

Stages (``--stages``, in this order):

* ``captions`` -- core ``CLIPTextEncode`` of every caption of the world on the generated CLIP-L (fingerprint
  written or checked; ComfyUI runs the text encoder in fp16 on CPU and GPU alike):
  ``caption_embeddings.safetensors``.
* ``vae``, ``classifier`` -- ``vae.safetensors``, ``demo_shapes_classifier.safetensors``.
* ``teacher``, ``style`` -- ``demo_shapes_sd15_unet_vae.safetensors`` (UNet + VAE), the style LoRA.

Each stage reads what earlier stages wrote in ``--out`` (or ``--inputs``). ``training.json`` collects the
reports (steps, seconds, losses, accuracies). Defaults are the shipped run (one H200, ~6 minutes);
``--toy`` shrinks every stage to seconds on a CPU (for the tests and a dry run).

Usage::

    .venv/bin/python scripts/demo_train.py --stages captions --out out/demo-train          # CPU, once
    python scripts/demo_train.py --stages vae classifier teacher style --out OUT --inputs out/demo-train
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from lcm_lora_pack.demo import clip_init, comfy_env, files, nets, train, world

LOG = logging.getLogger("demo_train")
STAGES = ("captions", "vae", "classifier", "teacher", "style")
EMBEDDINGS = "caption_embeddings.safetensors"
VAE = "vae.safetensors"
SEEDS = {"vae": 1, "classifier": 2, "teacher": 3, "style": 4}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES[1:]))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, help="folder with earlier stages' files (default: --out)")
    parser.add_argument("--toy", action="store_true", help="tiny stages (seconds on a CPU)")
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--teacher-steps", type=int, default=3200)
    parser.add_argument("--teacher-batch", type=int, default=128)
    parser.add_argument("--teacher-seconds", type=float, default=1e9, help="stop the teacher early after this")
    parser.add_argument("--style-steps", type=int, default=600)
    return parser.parse_args(argv)


def stage_configs(options) -> dict[str, train.Stage]:
    if options.toy:
        return {"vae": train.Stage(2, 2, 1e-3, SEEDS["vae"], warmup=1, eval_count=4),
                "classifier": train.Stage(2, 4, 1e-3, SEEDS["classifier"], warmup=1, eval_count=4),
                "teacher": train.Stage(2, 2, 1e-4, SEEDS["teacher"], warmup=1),
                "style": train.Stage(2, 2, 1e-4, SEEDS["style"], warmup=1)}
    return {"vae": train.Stage(options.vae_steps, 64, 1e-3, SEEDS["vae"], max_seconds=150, warmup=100),
            "classifier": train.Stage(options.classifier_steps, 256, 2e-3, SEEDS["classifier"], max_seconds=120,
                                      warmup=100),
            "teacher": train.Stage(options.teacher_steps, options.teacher_batch, 3e-4, SEEDS["teacher"],
                                   max_seconds=options.teacher_seconds, warmup=200),
            "style": train.Stage(options.style_steps, 64, 5e-4, SEEDS["style"], warmup=50)}


def find_input(options, name: str) -> Path:
    for folder in (options.out, options.inputs):
        if folder is not None and (folder / name).is_file():
            return folder / name
    raise SystemExit(f"{name} not found in --out or --inputs: run its stage first")


def stage_captions(options, report: dict) -> None:
    state = clip_init.clip_l_state_dict()
    fingerprint = files.SHIPPED / files.FINGERPRINT
    if fingerprint.is_file():
        clip_init.check_fingerprint(state, fingerprint)
    else:
        clip_init.write_fingerprint(fingerprint)
    comfy_env.prepare()
    clip = comfy_env.text_encoder(state)
    captions = world.all_captions()
    embeddings = comfy_env.encode_captions(clip, captions)
    files.save_tensors({"embeddings": embeddings}, options.out / EMBEDDINGS,
                       {"captions": json.dumps(captions), "torch": torch.__version__})
    report["captions"] = {"count": len(captions), "std": embeddings.std().item()}


def load_embeddings(options, device) -> torch.Tensor:
    tensors = files.load_tensors(find_input(options, EMBEDDINGS))
    return tensors["embeddings"].to(device=device, dtype=torch.float32)


def load_vae(options, device):
    vae = nets.build_taesd(0)
    vae.load_state_dict({k: v.float() for k, v in files.load_tensors(find_input(options, VAE)).items()})
    return vae.to(device).eval().requires_grad_(False)


def load_teacher(options):
    tensors = files.load_tensors(find_input(options, files.UNET_VAE))
    unet = nets.build_unet(0)
    unet.load_state_dict({k[len(nets.UNET_PREFIX):]: v.float() for k, v in tensors.items()
                          if k.startswith(nets.UNET_PREFIX)})
    return unet.eval()


def check_clip_fingerprint(report: dict) -> None:
    """On a training machine: does this torch draw the CLIP-L the embeddings came from? (Reported, and fatal.)"""
    start = time.perf_counter()
    clip_init.check_fingerprint(clip_init.clip_l_state_dict(), files.SHIPPED / files.FINGERPRINT)
    report["clip_fingerprint"] = {"torch": torch.__version__, "ok": True, "seconds": time.perf_counter() - start}


def run_stage(name: str, options, configs, device, report: dict) -> None:
    start = time.perf_counter()
    if name == "captions":
        stage_captions(options, report)
    elif name == "vae":
        vae, info = train.train_vae(configs["vae"], device)
        files.save_tensors(vae.state_dict(), options.out / VAE, dtype=torch.float32)
        report["vae"] = info
    elif name == "classifier":
        classifier, info = train.train_classifier(configs["classifier"], load_vae(options, device), device)
        files.save_tensors(classifier.state_dict(), options.out / files.CLASSIFIER)
        report["classifier"] = info
    elif name == "teacher":
        vae = load_vae(options, device)
        unet, info = train.train_teacher(configs["teacher"], vae, load_embeddings(options, device), device)
        tensors = {nets.UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
        tensors.update({nets.VAE_PREFIX + k: v for k, v in vae.state_dict().items()})
        files.save_tensors(tensors, options.out / files.UNET_VAE, {"demo": "teacher UNet + TAESD VAE"})
        report["teacher"] = info
    elif name == "style":
        vae = load_vae(options, device)
        unet = load_teacher(options)  # the shipped fp16 weights: the LoRA is trained on what users get
        lora, info = train.train_style_lora(configs["style"], unet.to(device), vae,
                                            load_embeddings(options, device), device)
        files.save_tensors(lora, options.out / files.STYLE_LORA,
                           {"modelspec.title": "demo shapes striped style", "trigger": world.STYLE_TRIGGER})
        report["style"] = info
    report.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
    LOG.info("stage %s done in %.1f s", name, time.perf_counter() - start)


def main(argv=None) -> int:
    options = parse_args(argv)
    device = comfy_env.start_script(options.out)
    configs = stage_configs(options)
    report_path = options.out / "training.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "toy": options.toy})
    if device.type == "cuda":
        check_clip_fingerprint(report)
    for name in STAGES:
        if name in options.stages:
            run_stage(name, options, configs, device, report)
            report_path.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
