"""LoRA mixing nodes: a chainable LoRA stack, the mixer (τ' = Σ λᵢ τᵢ in one clone) and the merged export.

The checks, the patching and the reports live in ``lora/``: the mixer applies its stack through the pack's one
apply path (``host.comfy_apply.apply_stack``, which the loader calls with a stack of one), the export checks
the stack the same way (``plan_stack``) and writes ``lora.export.build_export``'s result. This module finds the
stack's files in ``models/loras`` and hands an LCM accelerator's model to LCM model sampling.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from ..host.comfy_apply import StackLora, apply_stack, export_device, plan_stack
from ..lora import mix
from ..lora.export import DEFAULT_SAVE_DTYPE, MODES, SAVE_DTYPES, build_export, export_report, kohya_names
from ..lora.io import read_lora_file
from ..lora.safe_write import atomic_save_safetensors
from ..lora.types import StackEntry
from .common import CATEGORY_LORA, NODE_PREFIX, check_inputs, check_model_file, first_failure, run_every_time
from .lora_nodes import hand_off

LOG = logging.getLogger(__name__)

STACK = io.Custom("LCMPACK_LORA_STACK")
_STACK_TOOLTIP = "A LoRA stack from another 'LoRA Stack' node; this node appends its LoRA to it."
_NORM_TOOLTIP = ("How style weights are rescaled before mixing; the accelerator keeps its weight. none: as "
                 "given. sum: style weights scaled so Σ|λ| = style_budget. l2: scaled so √Σλ² = style_budget.")


def _lora_names() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list("loras")


def _read_stack(stack) -> list[StackLora]:
    """The stack's files, found in models/loras and read (``lora.io.read_lora_file``: safe, cached)."""
    import folder_paths

    return [StackLora(read_lora_file(folder_paths.get_full_path_or_raise("loras", item.lora_name),
                                     name=item.lora_name), float(item.weight), item.role) for item in stack or ()]


def _lora_folder():
    import folder_paths

    return folder_paths.get_folder_paths("loras")[0]


class LoraStack(io.ComfyNode):
    """Append one LoRA (file, weight λ, role) to a chainable, immutable LoRA list."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}LoraStack",
            display_name="LoRA Stack (LCM mix)",
            category=CATEGORY_LORA,
            description="Adds one LoRA with its weight and role to a LoRA list. Chain as many as needed and "
                        "feed the list to 'LoRA Mixer' or 'LoRA Export'. The LCM-LoRA is the 'accelerator' "
                        "(weight 1.0 in the paper); style LoRAs are 'style' (0.8 in the paper).",
            inputs=[
                io.Combo.Input("lora_name", options=_lora_names(), tooltip="LoRA file from models/loras."),
                io.Float.Input("weight", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Weight λ of this LoRA in τ' = Σ λᵢ τᵢ (1.0 for LCM-LoRA, ~0.8 for styles)."),
                io.Combo.Input("role", options=[mix.ROLE_STYLE, mix.ROLE_ACCELERATOR], default=mix.ROLE_STYLE,
                               tooltip="accelerator: the LCM-LoRA (its weight is never normalised; an LCM "
                                       "accelerator switches the model to LCM sampling). style: any other LoRA."),
                STACK.Input("stack", optional=True, tooltip=_STACK_TOOLTIP),
            ],
            outputs=[STACK.Output(display_name="stack", tooltip="The list extended by this LoRA (a new list).")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None, weight: float | None = None,
                        role: str | None = None) -> bool | str:
        return first_failure(check_model_file("loras", "lora_name", lora_name),
                             check_inputs(cls, weight=weight, role=role))

    @classmethod
    def execute(cls, lora_name: str, weight: float, role: str, stack=None) -> io.NodeOutput:
        entry = StackEntry(lora_name=lora_name, weight=float(weight), role=role)
        return io.NodeOutput(tuple(stack or ()) + (entry,))


class LoraMixer(io.ComfyNode):
    """Apply a whole LoRA stack to MODEL/CLIP as one exact weighted sum, in one clone, with checks."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}LoraMixer",
            display_name="LoRA Mixer (LCM + styles)",
            category=CATEGORY_LORA,
            description="Applies every LoRA of the stack as ΔW = Σ λᵢ·(αᵢ/rᵢ)·UᵢDᵢ to one clone of the model "
                        "(and of CLIP for text-encoder LoRAs). Refuses mixed base families, LoRAs that do not "
                        "fit the model and an accelerator applied twice. With an LCM accelerator in the "
                        "stack the model is switched to LCM sampling.",
            inputs=[
                io.Model.Input("model", tooltip="The base model (same family as every LoRA in the stack)."),
                STACK.Input("stack", tooltip="The LoRA list built with 'LoRA Stack' nodes."),
                io.Combo.Input("style_normalization", options=list(mix.NORMALIZATIONS), default="none",
                               tooltip=_NORM_TOOLTIP),
                io.Boolean.Input("allow_partial", default=False,
                                 tooltip="Apply LoRAs whose layers only partly match this model (normally an "
                                         "error: a partly applied LoRA is usually the wrong base model)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder; needed when a LoRA carries text-encoder weights."),
                io.Float.Input("style_budget", default=1.0, min=0.0, max=10.0, step=0.01, optional=True,
                               tooltip="Target of the style normalisation (ignored for 'none')."),
            ],
            outputs=[io.Model.Output(tooltip="A patched clone of the model."),
                     io.Clip.Output(tooltip="A patched clone of CLIP (the input CLIP when no LoRA touches it)."),
                     io.String.Output(display_name="report", tooltip="What was applied, with weights and coverage.")],
        )

    @classmethod
    def validate_inputs(cls, style_normalization: str | None = None, style_budget: float | None = None) -> bool | str:
        return check_inputs(cls, style_normalization=style_normalization, style_budget=style_budget)

    @classmethod
    def execute(cls, model, stack, style_normalization: str, allow_partial: bool, clip=None,
                style_budget: float = 1.0) -> io.NodeOutput:
        result = apply_stack(model, clip, _read_stack(stack), allow_partial, style_normalization, style_budget)
        return hand_off(result, "LoRA Mixer")


class LoraExport(io.ComfyNode):
    """Write the mix of a LoRA stack as one LoRA file into models/loras (concat: exact; svd: rank r)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}LoraExport",
            display_name="LoRA Export (merged mix)",
            category=CATEGORY_LORA,
            description="Saves the stack's mix as one kohya-format LoRA (loads in ComfyUI LoraLoader and "
                        "diffusers load_lora_weights). concat: exact, rank = Σ ranks. svd: truncated SVD to "
                        "'rank' per layer (conv layers included, on the GPU when present) with the measured "
                        "relative error in the report and the file's metadata. Never overwrites silently.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The base model; its key map names the exported layers."),
                STACK.Input("stack", tooltip="The LoRA list built with 'LoRA Stack' nodes."),
                io.String.Input("filename", default="lcm_mix",
                                tooltip="File name in models/loras (no folders; .safetensors is appended)."),
                io.Combo.Input("mode", options=list(MODES), default="concat",
                               tooltip="concat: lossless (rank = sum of ranks). svd: reduce every layer to 'rank'."),
                io.Int.Input("rank", default=64, min=1, max=4096,
                             tooltip="Target rank for svd (1 .. the concatenated rank); ignored by concat."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace an existing file of that name (otherwise it is an error)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder; needed when a LoRA carries text-encoder weights."),
                io.Combo.Input("style_normalization", options=list(mix.NORMALIZATIONS), default="none",
                               optional=True, tooltip=_NORM_TOOLTIP),
                io.Float.Input("style_budget", default=1.0, min=0.0, max=10.0, step=0.01, optional=True,
                               tooltip="Target of the style normalisation (ignored for 'none')."),
                io.Combo.Input("save_dtype", options=list(SAVE_DTYPES), default=DEFAULT_SAVE_DTYPE, optional=True,
                               tooltip="Precision of the written factors. fp16: like published LoRAs (half the "
                                       "size of fp32). bf16: same size, wider range. fp32: bit-exact concat. The "
                                       "reported error is measured on the factors as written."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="File written, mode, rank, measured error.")],
        )

    fingerprint_inputs = classmethod(run_every_time)  # writes a file: runs on every queue, never from the cache

    @classmethod
    def validate_inputs(cls, filename: str | None = None, rank: int | None = None, mode: str | None = None,
                        style_normalization: str | None = None, style_budget: float | None = None,
                        save_dtype: str | None = None) -> bool | str:  # noqa: PLR0913 (inputs of the schema)
        # No **kwargs: with them ComfyUI skips its own combo/min/max checks of every input.
        from ..lora.safe_write import ExportPathError, export_file_name

        try:
            export_file_name(filename if filename is not None else "lcm_mix")
        except ExportPathError as error:
            return str(error)
        if rank is not None and rank < 1:
            return f"rank={rank} must be >= 1."
        return check_inputs(cls, rank=rank, mode=mode, style_normalization=style_normalization,
                            style_budget=style_budget, save_dtype=save_dtype)

    @classmethod
    def execute(cls, model, stack, filename: str, mode: str, rank: int, overwrite: bool, clip=None,
                style_normalization: str = "none", style_budget: float = 1.0,
                save_dtype: str = DEFAULT_SAVE_DTYPE) -> io.NodeOutput:  # noqa: PLR0913 (inputs of the schema)
        plan = plan_stack(model, clip, _read_stack(stack), False, style_normalization, style_budget, export=True)
        result = build_export(plan.entries, plan.weights, mode, rank, kohya_names(plan.maps.merged),
                              device=export_device(), save_dtype=save_dtype)
        path = atomic_save_safetensors(result.tensors, result.metadata, _lora_folder(), filename,
                                       overwrite=overwrite)
        report = export_report(path, mode, result, plan.entries, plan.weights)
        LOG.info("%s", report)
        return io.NodeOutput(report, ui=ui.PreviewText(report))


NODES = [LoraStack, LoraMixer, LoraExport]
