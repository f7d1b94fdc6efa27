"""A CLIP vision model ComfyUI's ``CLIPVisionLoader`` detects and an IP-Adapter of the tiny SD1.5 test family for
``ComfyUI_IPAdapter_plus`` (cubiq, 9d076a3), for the composition tests (issue 24).

* CLIP vision: core detects an image encoder only by its layer count (``comfy/clip_vision.py``
  ``load_clipvision_from_sd``: a key ``vision_model.encoder.layers.22.*`` → ViT-L/14, ``.30.`` → ViT-H, ``.47.``
  → ViT-bigG) and then builds the full-size config, so the smallest it loads is ViT-L/14 at 224 px
  (``clip_vision_config_vitl.json``: 24 layers, width 1024, projection 768; 303 M parameters). Written in fp16
  from core's own ``CLIPVisionModelProjection`` shapes, tensor by tensor: 607 MB on disk, ~6 s on 2 CPU cores,
  once per test session.
* IP-Adapter: the original SD1.5 layout (``ip-adapter_sd15``: ``image_proj.proj`` → 4 tokens of the UNet's
  cross-attention width 768, ``image_proj.norm``, and ``ip_adapter.{2n+1}.to_k_ip`` / ``to_v_ip`` for the 16
  cross-attention layers IPAdapter plus numbers in SD1.5's block order), with the image-embedding width of the
  ViT-L projection (768, where ViT-H gives 1024) and the tiny UNet's attention width (320) in every layer. The pack
  patches the layers the tiny UNet has (``input 1`` = number 0, ``middle 1`` = number 15); the others are loaded
  and never called, as IPAdapter plus does for any UNet. ``to_v_ip`` is scaled by :data:`IP_VALUE_SCALE`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models import seeded_value

CROSS_ATTENTION = 768  # SD1.5's context width: the IP tokens' width
IP_TOKENS = 4  # clip_extra_context_tokens of the non-plus SD1.5 IP-Adapter
SD15_IP_LAYERS = 16  # input 1,2,4,5,7,8 + output 3..11 + middle (IPAdapterPlus.ipadapter_execute)
# to_v_ip's scale: at the 1/√fan_in of every generated weight the image tokens move the random tiny UNet's output
# by ~1e-5 of its size (one patched layer, at the top of the UNet); ×100 makes the IP-Adapter's effect plain
# (a test asserts > 1e-3) without changing what runs.
IP_VALUE_SCALE = 100.0


def clip_vision_vitl_shapes() -> dict[str, torch.Size]:
    """Every tensor of core's ViT-L/14 ``CLIPVisionModelProjection`` (``clip_vision_config_vitl.json``)."""
    from .host import comfyui_root, prepare_import

    prepare_import()
    import json

    import comfy.ops
    from comfy.clip_model import CLIPVisionModelProjection

    config = json.loads((comfyui_root() / "comfy" / "clip_vision_config_vitl.json").read_text())
    with torch.device("meta"):
        model = CLIPVisionModelProjection(config, torch.float32, "meta", comfy.ops.disable_weight_init)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_clip_vision_vitl(path: Path, seed: int = 60) -> Path:
    """A ViT-L/14 CLIP vision model (``models/clip_vision``) with seeded weights, fp16."""
    return _save(path, {name: seeded_value(seed, name, tuple(shape)).to(torch.float16)
                        for name, shape in clip_vision_vitl_shapes().items()})


def ipadapter_shapes(image_embeds: int = 768, attention_width: int = 320) -> dict[str, tuple[int, ...]]:
    """The SD1.5 IP-Adapter's tensors (see module doc), for image embeddings of ``image_embeds`` and a UNet whose
    cross-attention layers are ``attention_width`` wide."""
    shapes: dict[str, tuple[int, ...]] = {
        "image_proj.proj.weight": (IP_TOKENS * CROSS_ATTENTION, image_embeds),
        "image_proj.proj.bias": (IP_TOKENS * CROSS_ATTENTION,),
        "image_proj.norm.weight": (CROSS_ATTENTION,), "image_proj.norm.bias": (CROSS_ATTENTION,)}
    for number in range(SD15_IP_LAYERS):
        for name in ("to_k_ip", "to_v_ip"):
            shapes[f"ip_adapter.{2 * number + 1}.{name}.weight"] = (attention_width, CROSS_ATTENTION)
    return shapes


def write_ipadapter_sd15(path: Path, seed: int = 70) -> Path:
    """An IP-Adapter of the tiny SD1.5 family (``models/ipadapter``) for the ViT-L CLIP vision model."""
    return _save(path, {name: seeded_value(seed, name, shape) * (IP_VALUE_SCALE if "to_v_ip" in name else 1.0)
                        for name, shape in ipadapter_shapes().items()})
