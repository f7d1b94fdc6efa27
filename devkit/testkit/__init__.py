"""Test-only ComfyUI custom node folder: ``LCMPackTest_TinySDXLCheckpointLoader``, ``LCMPackTest_ConditioningProbe``,
``LCMPackTest_UNetRecorder``.

Loaded next to the pack by the workflow tests and by ``scripts/run_examples.py`` (when it runs on generated
models). It stands in for ``CheckpointLoaderSimple`` on SDXL workflows -- same input name ``ckpt_name`` and
outputs MODEL/CLIP/VAE -- because a real SDXL text encoder pair is too big for CI (see
devkit/tiny_sdxl.py). ComfyUI loads it only where a host links it into ``custom_nodes/``
(:func:`lcm_lora_pack.devkit.workflows.link_testkit`); it is never registered for users and never appears in
``example_workflows/``. ComfyUI loads this folder as a top-level module, so it imports the kit by the pack's
package name (``lcm_lora_pack`` is importable in every process that links it: see ``devkit/host.py``).
"""
from __future__ import annotations

import os

import comfy.sd
import comfy.utils
import folder_paths
import torch
from lcm_lora_pack.devkit.tiny_sdxl import build_tiny_sdxl_clip, split_tiny_sdxl_checkpoint

NODE_ID = "LCMPackTest_TinySDXLCheckpointLoader"
PROBE_ID = "LCMPackTest_ConditioningProbe"


class TinySDXLCheckpointLoader:
    """Loads a tiny SDXL test checkpoint into the same MODEL/CLIP/VAE objects CheckpointLoaderSimple gives."""

    DESCRIPTION = "TEST ONLY: loads the tiny SDXL checkpoint written by devkit/tiny_sdxl.py."
    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),
                                           {"tooltip": "A tiny SDXL test checkpoint."})}}

    def load_checkpoint(self, ckpt_name):
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        unet_sd, vae_sd, clip_sd = split_tiny_sdxl_checkpoint(comfy.utils.load_torch_file(path, safe_load=True))
        model = comfy.sd.load_diffusion_model_state_dict(unet_sd)
        if model is None:
            raise RuntimeError(f"{ckpt_name}: the UNet section is not detected as an SDXL-family model")
        return model, build_tiny_sdxl_clip(clip_sd), comfy.sd.VAE(sd=vae_sd)


class ConditioningProbe:
    """Passes its conditioning through and records that it ran: ``executions`` (a class attribute, so a test
    reads it through ``NODE_CLASS_MAPPINGS``) gets ``label`` appended on every execution. Used to prove which
    branches of a graph ComfyUI's executor evaluates (e.g. a lazy input that was not requested)."""

    DESCRIPTION = "TEST ONLY: conditioning pass-through that records each execution."
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "probe"
    executions: list[str] = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING", {"tooltip": "Passed through unchanged."}),
                             "label": ("STRING", {"default": "probe", "tooltip": "Recorded per execution."})}}

    def probe(self, conditioning, label):
        type(self).executions.append(label)
        return (conditioning,)


class UNetRecorder:
    """MODEL -> MODEL clone whose UNet calls are recorded: for every call of the diffusion model during sampling,
    its input ``x`` (the UNet's own units), timestep ``t`` and raw output (eps / v) are written to
    ``output/records/<label>.safetensors`` (``x_<n>``, ``t_<n>``, ``out_<n>``, rewritten after each call). A
    torch forward hook is held on the UNet only for the duration of one ``apply_model`` call (test only)."""

    DESCRIPTION = "TEST ONLY: records the UNet's inputs and outputs during sampling."
    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "record"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "The model to record."}),
                             "label": ("STRING", {"default": "unet", "tooltip": "File name of the record."})}}

    def record(self, model, label):
        from safetensors.torch import save_file

        path = os.path.join(folder_paths.get_output_directory(), "records", f"{label}.safetensors")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        previous = model.model_options.get("model_function_wrapper")

        def wrapper(apply_model, args):
            unet = apply_model.__self__.diffusion_model

            def hook(_module, inputs, output):
                n = len(tensors) // 3
                tensors[f"x_{n}"] = inputs[0].detach().float().clone().contiguous()
                tensors[f"t_{n}"] = inputs[1].detach().float().clone().contiguous()
                tensors[f"out_{n}"] = output.detach().float().clone().contiguous()

            handle = unet.register_forward_hook(hook)
            try:
                if previous is not None:
                    return previous(apply_model, args)
                return apply_model(args["input"], args["timestep"], **args["c"])
            finally:
                handle.remove()
                save_file(dict(tensors), path)

        clone = model.clone()
        clone.set_model_unet_function_wrapper(wrapper)
        return (clone,)


RECORDER_ID = "LCMPackTest_UNetRecorder"
NODE_CLASS_MAPPINGS = {NODE_ID: TinySDXLCheckpointLoader, PROBE_ID: ConditioningProbe, RECORDER_ID: UNetRecorder}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: "Tiny SDXL Checkpoint (test only)",
                              PROBE_ID: "Conditioning Probe (test only)",
                              RECORDER_ID: "UNet Recorder (test only)"}
