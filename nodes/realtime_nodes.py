"""Real-time nodes: the LCM fast path on a MODEL (whole 4-step loop as one CUDA graph) and a fast VAE decode.

Thin V3 nodes; the mechanism lives in ``samplers/fast_path.py`` (pure torch), ``host/comfy_fast_path.py``
(the sampler hook) and ``host/comfy_fast_vae.py`` (the decode); docs/realtime.md explains when each runs.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..host.comfy_fast_path import MODES, FastPathSettings, with_fast_path
from ..host.comfy_fast_vae import fast_vae_decode
from .common import CATEGORY_SAMPLING, NODE_PREFIX, check_inputs

MODE_TOOLTIP = ("compile_cuda_graph: torch.compile the UNet (first call ~40 s on SD1.5, once per shape) and "
                "replay the whole loop as one CUDA graph -- fastest, fp16-close to eager. cuda_graph: one CUDA graph "
                "of the eager kernels (capture < 1 s, same latent as eager). off: ComfyUI's normal sampling.")


class LCMFastPath(io.ComfyNode):
    """MODEL -> MODEL: LCM sampling of this model runs as one captured CUDA graph per shape."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}LCMFastPath", display_name="LCM Fast Path (real-time)",
            category=CATEGORY_SAMPLING,
            description="Real-time sampling: KSampler (LCM), KSampler, SamplerCustom and SamplerCustomAdvanced "
                        "(BasicGuider or CFGGuider; cfg > 1 runs cond and uncond as one batched model call) with "
                        "the lcm or euler sampler and any sigma list (split schedules for img2img) then run the "
                        "whole few-step loop -- UNet, guidance, scheduler arithmetic and noise -- as one CUDA "
                        "graph, captured on the first call of a shape and again only when the shape, the "
                        "schedule, the cfg or the weights change (a LoRA strength change re-captures; the log says "
                        "when and how long). Falls back to normal sampling, with a log line saying why, on CPU, in "
                        "low VRAM mode, with other samplers, masks, areas, several or chained ControlNets, T2I adapters or "
                        "model patches (one ControlNet runs inside the graph).",
            inputs=[
                io.Model.Input("model", tooltip="The LCM model (after the LCM-LoRA loader / mixer)."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0], tooltip=MODE_TOOLTIP),
            ],
            outputs=[io.Model.Output(tooltip="A clone of the model with the fast path; the input is not changed.")],
        )

    @classmethod
    def validate_inputs(cls, mode: str | None = None) -> bool | str:
        # V3 combos are not checked by every supported host: a bad mode fails here, naming the input.
        return check_inputs(cls, mode=mode)

    @classmethod
    def execute(cls, model, mode: str) -> io.NodeOutput:
        return io.NodeOutput(with_fast_path(model, FastPathSettings(mode=mode)))


class FastVAEDecode(io.ComfyNode):
    """VAEDecode as one captured CUDA graph per latent shape."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=f"{NODE_PREFIX}FastVAEDecode", display_name="VAE Decode (fast, real-time)",
            category=CATEGORY_SAMPLING,
            description="The image of VAEDecode, decoded by one CUDA graph per latent shape (optionally of the "
                        "torch.compiled decoder). Falls back to VAEDecode, with a log line, on CPU, in low VRAM "
                        "mode or when the batch does not fit in memory at once.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode."),
                io.Vae.Input("vae", tooltip="The VAE to decode with."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="compile_cuda_graph: torch.compile the decoder (first call ~30 s per "
                                       "shape) inside the graph. cuda_graph: the eager decoder in one graph. "
                                       "off: VAEDecode."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded image.")],
        )

    @classmethod
    def validate_inputs(cls, mode: str | None = None) -> bool | str:
        return check_inputs(cls, mode=mode)

    @classmethod
    def execute(cls, samples, vae, mode: str) -> io.NodeOutput:
        images = fast_vae_decode(vae, samples["samples"], mode)
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return io.NodeOutput(images)


NODES = [LCMFastPath, FastVAEDecode]
