"""LCM-LoRA loader node: one node makes an SD1.x / SD2.x / SDXL / SSD-1B / Vega model fast, safely.

Thin: reading, detection, the checks, patching and the report live in ``lora/`` (``lora.io``; the one apply
path ``host.comfy_apply.apply_stack``, called with a stack of one); this node finds the file and hands an
LCM-LoRA's model to LCM model sampling.
"""
from __future__ import annotations

import logging

import folder_paths
from comfy_api.latest import io, ui

from ..accelerators.render import kind_tooltip, loader_kinds
from ..host.comfy_apply import ApplyResult, apply_lora
from ..host.comfy_model_sampling import with_lcm_sampling
from ..lora.detect import with_kind
from ..lora.io import read_lora_file
from .common import CATEGORY_LORA, NODE_PREFIX, check_inputs, check_model_file, first_failure

LOG = logging.getLogger(__name__)


def hand_off(result: ApplyResult, node: str, notes: list[str] | None = None) -> io.NodeOutput:
    """MODEL, CLIP, report of an applied stack (also shown on the node); an LCM accelerator's model goes to LCM
    model sampling (which keeps an LCM model sampling already set, its constants and prediction type, else adds
    the pack's)."""
    model = with_lcm_sampling(result.model, boundary=True) if result.lcm_sampling else result.model
    report = "\n".join([result.report, *(notes or [])])
    LOG.info("%s:\n%s", node, report)
    return io.NodeOutput(model, result.clip, report, ui=ui.PreviewText(report))


class LCMLoraLoader(io.ComfyNode):
    """Apply an LCM-LoRA (or another acceleration/style LoRA) after checking it fits the model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}LCMLoraLoader",
            display_name="LCM-LoRA Loader",
            category=CATEGORY_LORA,
            description="Loads a LoRA from models/loras (kohya, PEFT, diffusers; safetensors, or pickle only if it "
                        "loads with weights_only), checks that it was made for this model's family and that every "
                        "one of its modules lands on a weight, then patches a clone. For an LCM-LoRA it also sets "
                        "LCM model sampling. Refuses (with the LoRA to use) instead of silently half-applying. "
                        "The same acceleration LoRA is never applied twice.",
            inputs=[
                io.Model.Input("model", tooltip="The model to accelerate (SD1.x, SD2.x, SDXL, SSD-1B, Vega; FLUX.1, SD3, "
                                                "Qwen-Image or Wan with their accelerators)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Optional CLIP; needed when the LoRA also patches the text encoder."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="LoRA file in models/loras, e.g. lcm-lora-sdv1-5.safetensors for SD1.5 or "
                                       "lcm-lora-sdxl.safetensors for SDXL."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="LoRA strength s: W + s·(alpha/rank)·up·down. 1.0 for LCM-LoRA."),
                io.Boolean.Input("allow_partial", default=False,
                                 tooltip="Apply only the matching modules when some LoRA modules match no weight "
                                         "of the model (listed in the report). Off: such a LoRA is refused."),
                io.Combo.Input("kind", options=["auto", *loader_kinds()], default="auto", optional=True,
                               tooltip=kind_tooltip()),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="Patched clone of the model (input unchanged)."),
                io.Clip.Output(display_name="CLIP", tooltip="Patched clone of the CLIP, or the input CLIP."),
                io.String.Output(display_name="report",
                                 tooltip="Family, kind, matched modules, alpha source, sampler to use."),
            ],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None, strength: float | None = None,
                        kind: str | None = None) -> bool | str:
        # No **kwargs here: with them ComfyUI skips its own min/max/combo checks of every input.
        return first_failure(check_model_file("loras", "lora_name", lora_name),
                             check_inputs(cls, strength=strength, kind=kind))

    @classmethod
    def execute(cls, model, lora_name: str, strength: float = 1.0, allow_partial: bool = False,
                clip=None, kind: str = "auto") -> io.NodeOutput:  # noqa: PLR0913 (inputs of the schema)
        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        lora = with_kind(read_lora_file(path, name=lora_name), kind)
        result = apply_lora(model, clip, lora, strength=strength, allow_partial=allow_partial)
        return hand_off(result, "LCM-LoRA Loader", notes=[n for n in lora.notes if n.startswith(("kind:", "metadata"))])


NODES = [LCMLoraLoader]
