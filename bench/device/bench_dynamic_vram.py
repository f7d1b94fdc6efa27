"""The pack on the GPU in one ComfyUI VRAM mode (issue 21 "Dynamic VRAM, measured on the GPU"; issue 29 items 2, 3).

ComfyUI is booted in this process (``--vram dynamic``: the host's default, Dynamic VRAM where the host has it;
``--vram disabled``: as ``--disable-dynamic-vram``). Per family (full-size random weights, fp16):

* **Loader and mixer against the reference.** The same random kohya-format LoRA files are applied by the pack
  (``LCMPack_LCMLoraLoader``; ``LCMPack_LoraStack`` ×2 → ``LCMPack_LoraMixer``), by core ``LoraLoaderModelOnly``,
  and by PEFT on the diffusers twin of the UNet (``inject_adapter_in_model`` with the files' A/B tensors, scaled
  to the strength, merged in fp32, cast to fp16). Each row: ‖out − ref‖/‖ref‖ of one UNet forward.
* **Strength changes take effect:** the loader re-run at 0.5 matches PEFT at 0.5 and differs from 1.0; back at
  1.0 it gives the first output again.
* **Fast path:** 4-step ``KSamplerLCM`` at cfg 1, eager vs ``LCMPack_LCMFastPath`` (cuda_graph; compile if
  asked): max |Δ| to eager, median ms, and the path's report (capture events or its fallback reason).
* **Step time and peak memory** of the patched UNet forward; an export (``LCMPack_LoraExport`` concat) run.

Run (from the repository root, on a CUDA machine)::

    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=.pack python -m lcm_lora_pack.bench.device.bench_dynamic_vram \\
        --vram dynamic --families sd15 --json out/dynamic.json

bench/device/run_dynamic_vram.sh runs every mode and host, one process each, and prints the table.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

LOG = logging.getLogger("bench_dynamic_vram")
ROLES = {"lcm": ("LCM_TARGETS", 64, 8.0, 11), "style": ("STYLE_TARGETS", 32, 16.0, 12)}


class FastPathLines(logging.Handler):
    """Collects the pack's real-time report lines ("LCM fast path: ..." / "LCM fast decode: ...")."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith(("LCM fast path", "LCM fast decode")):
            self.lines.append(message)


DEVICE = "cuda"
DTYPE = torch.float16


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def boot(vram: str):
    """ComfyUI booted on CUDA in the asked VRAM mode (args set before model_management is imported)."""
    from lcm_lora_pack.devkit import host as comfy_host

    comfy_host.prepare_import(DEVICE)
    from comfy.cli_args import args

    if vram == "disabled" and hasattr(args, "disable_dynamic_vram"):
        args.disable_dynamic_vram = True
    if vram == "dynamic" and DEVICE == "cuda":
        start_dynamic_vram(args)
    from lcm_lora_pack.bench.host import boot as bench_boot

    return bench_boot(DEVICE)


def start_dynamic_vram(args) -> bool:
    """What ComfyUI's ``main.py`` does at start-up to turn Dynamic VRAM on (0.33.0 main.py: ``comfy_aimdo.control``
    init, then ``init_devices``, ``CoreModelPatcher = ModelPatcherDynamic``, ``aimdo_enabled``); a booted-in-process
    ComfyUI does not run main.py, so without this its models load with the plain ModelPatcher. Hosts without
    Dynamic VRAM (0.8.0, 0.3.75): nothing to do."""
    import comfy.cli_args

    enables = getattr(comfy.cli_args, "enables_dynamic_vram", None)
    if not callable(enables) or not enables():
        return False
    import comfy_aimdo.control

    try:
        comfy_aimdo.control.init(simple_vram_headroom=None, nvml_pressure=True)
    except TypeError:
        comfy_aimdo.control.init()
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher

    devices = comfy.model_management.get_all_torch_devices()
    try:
        ready = comfy_aimdo.control.init_devices((d.index, int(args.vram_headroom * 1024 ** 3)) for d in devices)
    except TypeError:
        ready = comfy_aimdo.control.init_devices(d.index for d in devices)
    if ready:
        comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
        comfy.memory_management.aimdo_enabled = True
    LOG.warning("Dynamic VRAM %s (as main.py starts it)", "on" if ready else "NOT available")
    return bool(ready)


def write_loras(unet, folder: Path, family: str) -> dict[str, tuple[str, dict, dict, int, float]]:
    """role → (file name, kohya tensors, kohya prefix → diffusers module name, rank, alpha)."""
    from lcm_lora_pack.bench import lora_files

    out = {}
    for role, (targets_name, rank, alpha, seed) in ROLES.items():
        suffixes = getattr(lora_files, targets_name)
        tensors = lora_files.lora_state_dict(unet, suffixes, rank, alpha, seed, DEVICE)
        names = {"lora_unet_" + n.replace(".", "_"): n for n, _ in lora_files._targets(unet, suffixes)}
        name = f"dynvram-{family}-{role}.safetensors"
        if not (folder / name).exists():
            lora_files.write_lora(folder / name, tensors)
        out[role] = (name, tensors, names, rank, alpha)
    return out


@torch.no_grad()
def peft_reference(unet, loras: list[tuple[tuple, float]]):
    """diffusers UNet with the LoRAs merged by PEFT: W + Σ s·(α/r)·B·A, merged in fp32, run in fp16."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(unet).float()
    adapters = []
    for index, ((_, tensors, names, rank, alpha), strength) in enumerate(loras):
        adapter = f"a{index}"
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=sorted(set(names.values())))
        model = inject_adapter_in_model(config, model, adapter_name=adapter)
        modules = dict(model.named_modules())
        for prefix, module_name in names.items():
            layer = modules[module_name]
            layer.lora_A[adapter].weight.copy_(tensors[prefix + ".lora_down.weight"].float())
            layer.lora_B[adapter].weight.copy_(tensors[prefix + ".lora_up.weight"].float())
            layer.scaling[adapter] = strength * alpha / rank
        adapters.append(adapter)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge(adapter_names=[a for a in adapters if a in module.lora_A])
    return model.to(DTYPE)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def median_ms(fn, repeats: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class Family:
    """One family's models, LoRA files, inputs and the ComfyUI-side forward of a patched model."""

    def __init__(self, host, name: str):
        from lcm_lora_pack.bench import synthetic
        from lcm_lora_pack.bench.context import FamilyModels
        from lcm_lora_pack.bench.sampling_sections import _unet_inputs

        self.host, self.name = host, name
        self.family = synthetic.FAMILIES[name]
        self.pair = synthetic.build_unet(self.family, DEVICE, DTYPE)
        self.models = FamilyModels(self.family, self.pair, {})
        self.x, self.t, self.comfy_kwargs, self.diffusers_kwargs = _unet_inputs(self.models, 1, DEVICE, DTYPE)
        self.loras = write_loras(self.pair.diffusers, host.loras_dir, name)

    @torch.inference_mode()
    def comfy_out(self, patcher) -> torch.Tensor:
        import comfy.model_management

        comfy.model_management.load_models_gpu([patcher])
        return patcher.model.diffusion_model(self.x, timesteps=self.t, **self.comfy_kwargs).clone()

    @torch.inference_mode()
    def diffusers_out(self, unet) -> torch.Tensor:
        return unet(self.x, self.t, return_dict=False, **self.diffusers_kwargs)[0].clone()

    def loader(self, strength: float):
        return self.host.call("LCMPack_LCMLoraLoader", model=self.pair.comfy, lora_name=self.loras["lcm"][0],
                              strength=strength)[0]

    def mixer(self, weights=(1.0, 0.8)):
        stack = None
        for (role, kind), weight in zip((("lcm", "accelerator"), ("style", "style")), weights, strict=True):
            provided = {"lora_name": self.loras[role][0], "weight": weight, "role": kind}
            if stack is not None:
                provided["stack"] = stack
            (stack,) = self.host.call("LCMPack_LoraStack", **provided)[:1]
        return self.host.call("LCMPack_LoraMixer", model=self.pair.comfy, stack=stack)[0], stack


def row(rows: list, family: str, what: str, fn) -> None:
    """Run one measurement; a failure becomes the row's value (one broken arm must not lose the others)."""
    try:
        value = fn()
    except Exception as error:  # noqa: BLE001
        LOG.error("%s / %s failed:\n%s", family, what, traceback.format_exc())
        value = f"FAILED {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
    rows.append({"family": family, "what": what, "value": value})
    print(f"ROW {family} | {what} | {value}", flush=True)


def parity_rows(fam: Family, rows: list) -> None:
    base_out = fam.comfy_out(fam.pair.comfy)
    row(rows, fam.name, "unpatched: rel. diff ComfyUI vs diffusers UNet (floor)",
        lambda: f"{rel(base_out, fam.diffusers_out(fam.pair.diffusers)):.2e}")
    outs = {}
    for strength in (1.0, 0.5):
        reference = peft_reference(fam.pair.diffusers, [(fam.loras["lcm"], strength)])
        expected = fam.diffusers_out(reference)
        del reference
        outs[strength] = fam.comfy_out(fam.loader(strength))
        row(rows, fam.name, f"LCMLoraLoader strength {strength}: rel. diff vs PEFT merged",
            lambda s=strength, e=expected: f"{rel(outs[s], e):.2e}")
    (core,) = fam.host.call("LoraLoaderModelOnly", model=fam.pair.comfy, lora_name=fam.loras["lcm"][0],
                            strength_model=1.0)
    row(rows, fam.name, "LCMLoraLoader 1.0: rel. diff vs core LoraLoaderModelOnly",
        lambda: f"{rel(outs[1.0], fam.comfy_out(core)):.2e}")
    row(rows, fam.name, "strength 0.5 vs 1.0 (takes effect: > 0) / back to 1.0 vs first 1.0 (= 0)",
        lambda: f"{rel(outs[0.5], outs[1.0]):.2e} / {rel(fam.comfy_out(fam.loader(1.0)), outs[1.0]):.2e}")
    reference = peft_reference(fam.pair.diffusers, [(fam.loras["lcm"], 1.0), (fam.loras["style"], 0.8)])
    expected = fam.diffusers_out(reference)
    del reference
    row(rows, fam.name, "LoraStack×2 → LoraMixer (1.0, 0.8): rel. diff vs PEFT 2 adapters merged",
        lambda: f"{rel(fam.comfy_out(fam.mixer()[0]), expected):.2e}")


def timing_rows(fam: Family, rows: list) -> None:
    import comfy.model_management

    for label, build in (("unpatched", lambda: fam.pair.comfy), ("LCMLoraLoader 1.0", lambda: fam.loader(1.0)),
                         ("LoraMixer (1.0, 0.8)", lambda: fam.mixer()[0])):
        def measure(build=build):
            patcher = build()
            fam.comfy_out(patcher)
            if DEVICE != "cuda":
                return f"{median_ms(lambda: fam.comfy_out(patcher), 2, 1):.1f} ms/step (CPU smoke)"
            torch.cuda.reset_peak_memory_stats()
            step = median_ms(lambda: fam.comfy_out(patcher))
            peak = torch.cuda.max_memory_allocated() / 2**30
            free, total = torch.cuda.mem_get_info()
            return (f"{step:.1f} ms/step, torch peak {peak:.2f} GiB, GPU in use {(total - free) / 2**30:.2f} GiB, "
                    f"patcher {type(patcher).__name__}")

        row(rows, fam.name, f"UNet step b1 {label}", measure)
    comfy.model_management.soft_empty_cache()

    def export():
        _, stack = fam.mixer()
        start = time.perf_counter()
        fam.host.call("LCMPack_LoraExport", model=fam.pair.comfy, stack=stack, filename=f"dynvram-{fam.name}-mix",
                      mode="concat", overwrite=True)
        return f"{time.perf_counter() - start:.2f} s (concat, 2 LoRAs → 1 file)"

    row(rows, fam.name, "LoraExport", export)


def fast_path_rows(fam: Family, rows: list, modes: list[str], lines: FastPathLines) -> None:
    from lcm_lora_pack.bench import synthetic

    positive, _ = synthetic.synthetic_conditioning(fam.family, 1, DEVICE, DTYPE)
    negative, _ = synthetic.synthetic_conditioning(fam.family, 1, DEVICE, DTYPE, seed=5)
    latent = {"samples": torch.zeros(synthetic.latent_shape(fam.family, 1))}
    lcm = fam.loader(1.0)

    def sample(model, seed=1):
        return fam.host.call("LCMPack_KSamplerLCM", model=model, positive=positive, negative=negative,
                             latent_image=latent, seed=seed, steps=4, cfg=1.0, sampler="lcm", gamma=0.3,
                             denoise=1.0)[0]["samples"]

    eager = sample(lcm)
    row(rows, fam.name, "KSamplerLCM 4 steps eager", lambda: f"{median_ms(lambda: sample(lcm)):.1f} ms")
    for mode in modes:
        def measure(mode=mode):
            (fast,) = fam.host.call("LCMPack_LCMFastPath", model=lcm, mode=mode)
            del lines.lines[:]
            start = time.perf_counter()
            first = sample(fast)
            first_s = time.perf_counter() - start
            diff = float((first.float() - eager.float()).abs().max())
            relative = rel(first, eager)
            ms = median_ms(lambda: sample(fast))
            report = "; ".join(dict.fromkeys(lines.lines)) or "(no report line)"
            return f"{ms:.1f} ms (first call {first_s:.2f} s), max |Δ| vs eager {diff:.2e} (rel. L2 {relative:.1e}); {report[:400]}"

        row(rows, fam.name, f"LCMFastPath {mode} → KSamplerLCM", measure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vram", choices=("dynamic", "disabled"), default="dynamic")
    parser.add_argument("--families", default="sd15")
    parser.add_argument("--fast-modes", default="cuda_graph", help="comma list of fast path modes to time")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny SD1.5-family UNet, fp32 (checks the script)")
    args = parser.parse_args(argv)
    global DEVICE, DTYPE
    if args.smoke:
        DEVICE, DTYPE, args.families = "cpu", torch.float32, "tiny-sd15"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    lines = FastPathLines()
    logging.getLogger().addHandler(lines)
    host = boot(args.vram)
    import comfy.model_management as mm
    import comfyui_version
    from lcm_lora_pack.host.comfy_fast_path import dynamic_vram

    rows: list = []
    import comfy.cli_args

    enables = getattr(comfy.cli_args, "enables_dynamic_vram", None)
    header = {"comfyui": comfyui_version.__version__, "vram": args.vram, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "allocator": torch.cuda.get_allocator_backend(),
              "dynamic_vram_enabled": enables() if callable(enables) else "n/a (host has none)"}
    print("HEADER", json.dumps(header), flush=True)
    for name in [f for f in args.families.split(",") if f]:
        fam = Family(host, name)
        row(rows, name, "loaded patcher (Dynamic VRAM seen by the pack)",
            lambda fam=fam: f"{type(fam.pair.comfy).__name__}, dynamic={dynamic_vram(fam.pair.comfy)}")
        for section in (parity_rows, timing_rows):
            section(fam, rows)
        fast_path_rows(fam, rows, [m for m in args.fast_modes.split(",") if m], lines)
        del fam
        mm.unload_all_models()
        mm.soft_empty_cache()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
