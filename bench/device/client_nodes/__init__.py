"""Bench-only client node, installed into the client-side server bench's ``custom_nodes`` (never shipped with the
pack): ``LCMBenchClient_LoadImageBase64`` decodes a PNG sent inline in the prompt, as krita-ai-diffusion's
``ETN_LoadImageBase64`` (comfyui-tooling-nodes) does. A live client sends its canvas this way, in the POST itself;
core's ``LoadImage`` reads a file through PyAV since ComfyUI 0.33, which the device payload does not carry."""
from __future__ import annotations

import base64
import io


async def comfy_entrypoint():
    """V3 entry point: one node."""
    import numpy as np
    import torch
    from comfy_api.latest import ComfyExtension
    from comfy_api.latest import io as comfy_io
    from PIL import Image

    class LoadImageBase64(comfy_io.ComfyNode):
        """A base64 PNG/WebP → IMAGE [1, H, W, 3] in [0, 1], as the client encoded it."""

        @classmethod
        def define_schema(cls):
            return comfy_io.Schema(
                node_id="LCMBenchClient_LoadImageBase64", category="bench",
                inputs=[comfy_io.String.Input("image", tooltip="The image file's bytes, base64-encoded.")],
                outputs=[comfy_io.Image.Output()])

        @classmethod
        def execute(cls, image: str) -> comfy_io.NodeOutput:
            picture = Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")
            pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
            return comfy_io.NodeOutput(pixels.unsqueeze(0))

    class ClientNodes(ComfyExtension):
        async def get_node_list(self):
            return [LoadImageBase64]

    return ClientNodes()
