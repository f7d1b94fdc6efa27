"""Bench-only client nodes, installed into the client-side server bench's ``custom_nodes`` (never shipped with the
pack), the two ends of a krita-ai-diffusion job as its comfyui-tooling-nodes implement them:

* ``LCMBenchClient_LoadImageBase64`` decodes a PNG sent inline in the prompt, as ``ETN_LoadImageBase64`` does. A
  live client sends its canvas this way, in the POST itself; core's ``LoadImage`` reads a file through PyAV since
  ComfyUI 0.33, which the device payload does not carry.
* ``LCMBenchClient_SendImageWebSocket`` hands each image to the server as ``ETN_SendImageWebSocket`` does
  (``BinaryEventTypes.UNENCODED_PREVIEW_IMAGE``, ``[format, PIL image, None]`` to the prompt's client): the server
  encodes it (PNG at compression level 1 or JPEG quality 95) and sends it as a binary websocket message -- no
  file, no PNG metadata, no ``/view``."""
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

    class SendImageWebSocket(comfy_io.ComfyNode):
        """Each image of the batch to the prompt's client over the websocket (module docstring)."""

        @classmethod
        def define_schema(cls):
            return comfy_io.Schema(
                node_id="LCMBenchClient_SendImageWebSocket", category="bench", is_output_node=True,
                inputs=[comfy_io.Image.Input("images", tooltip="The images to send."),
                        comfy_io.Combo.Input("format", options=["PNG", "JPEG"], default="PNG",
                                             tooltip="How the server encodes them.")])

        @classmethod
        def execute(cls, images, format: str) -> comfy_io.NodeOutput:  # noqa: A002 (the tooling node's name)
            from server import BinaryEventTypes, PromptServer

            server = PromptServer.instance
            for tensor in images:
                pixels = np.clip(255.0 * tensor.cpu().numpy(), 0, 255).astype(np.uint8)
                server.send_sync(BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, [format, Image.fromarray(pixels), None],
                                 server.client_id)
            return comfy_io.NodeOutput()

    class ClientNodes(ComfyExtension):
        async def get_node_list(self):
            return [LoadImageBase64, SendImageWebSocket]

    return ClientNodes()
