"""An AnimateDiff-ready SD1.5 checkpoint and an AnimateLCM-format motion module for the composition tests (issue 24,
issue 29 item 5), built so that ComfyUI and AnimateDiff-Evolved (ADE, d8d163c) detect them as real.

Why not the tiny test UNet: ADE's motion module has SD1.5's widths hard-coded (``AnimateDiffModel``:
``layer_channels = (320, 640, 1280, 1280)``; a file naming ``down_blocks.3`` is SD1.5, ``down_blocks.2`` SDXL;
every key of that layout must be present, ``verify_load_result``), and ADE injects it into the UNet block by block
(``AnimateDiffModel._inject``: after the last SpatialTransformer, else the first ResBlock, of each block in turn:
8 modules into ``input_blocks``, 12 into ``output_blocks``). The one-level test UNet has one such block. So the UNet
here has SD1.5's block layout and widths (4 levels, 2 ResBlocks each, 320/640/1280/1280 channels) with the fewest
parameters that keeps it an SD1.5 model for ComfyUI: one SpatialTransformer per block at the first level only
(ComfyUI's ``detect_unet_config`` reads ``context_dim`` from a transformer), none in the middle block
(:data:`AD_UNET_CONFIG`: 671 M parameters, against SD1.5's 860 M). The motion module is an AnimateLCM-format file
(no ``pos_encoder`` keys: ADE's ``is_animatelcm``) with ADE's full layout: 4 down blocks × 2 and 4 up blocks × 3
temporal transformers with two temporal self-attention blocks each, no mid block (390 M parameters; a real
AnimateLCM ``sd15_t2v`` has the same widths).

Both are written in fp16, tensor by tensor (the writer never holds the fp32 model): about 2.1 GB on disk and
~20 s on 2 CPU cores, once per test session. Weights are seeded by (seed, name) like every generated model
(``models.seeded_value``); the temporal transformers' ``proj_out`` is scaled by :data:`PROJ_OUT_SCALE` (trained
modules start it at zero and keep it small), so twenty stacked residual modules keep activations O(1).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .models import SD15_UNET_CONFIG, seeded_value

AD_UNET_CONFIG = {
    **SD15_UNET_CONFIG,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 0, 0, 0, 0, 0, 0],
    "transformer_depth_output": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
    "transformer_depth_middle": -1,
}
UNET_PREFIX = "model.diffusion_model."
MOTION_WIDTHS = (320, 640, 1280, 1280)  # ADE's SD1.5 layer_channels
ATTENTION_BLOCKS = 2  # ("Temporal_Self", "Temporal_Self"), as in every published SD1.5 motion module
PROJ_OUT_SCALE = 0.1
DOWN_MODULES, UP_MODULES = 2, 3  # temporal transformers per down / up block (ADE's MotionModule)


def unet_shapes(unet_config: dict = AD_UNET_CONFIG) -> dict[str, torch.Size]:
    """Every tensor of ComfyUI's ``UNetModel`` for ``unet_config`` (built on the meta device)."""
    from .host import prepare_import

    prepare_import()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**unet_config, dtype=torch.float32, device="meta", operations=comfy.ops.disable_weight_init)
    return {name: tensor.shape for name, tensor in unet.state_dict().items()}


def _temporal_transformer_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """One ADE ``TemporalTransformer3DModel`` (8 heads, one block, geglu feed-forward) of ``width`` channels."""
    shapes: dict[str, tuple[int, ...]] = {"norm.weight": (width,), "norm.bias": (width,),
                                          "proj_in.weight": (width, width), "proj_in.bias": (width,)}
    block = "transformer_blocks.0."
    for index in range(ATTENTION_BLOCKS):
        attention = f"{block}attention_blocks.{index}."
        for name in ("to_q", "to_k", "to_v"):
            shapes[f"{attention}{name}.weight"] = (width, width)
        shapes[f"{attention}to_out.0.weight"] = (width, width)
        shapes[f"{attention}to_out.0.bias"] = (width,)
        shapes[f"{block}norms.{index}.weight"] = (width,)
        shapes[f"{block}norms.{index}.bias"] = (width,)
    shapes.update({f"{block}ff.net.0.proj.weight": (8 * width, width), f"{block}ff.net.0.proj.bias": (8 * width,),
                   f"{block}ff.net.2.weight": (width, 4 * width), f"{block}ff.net.2.bias": (width,),
                   f"{block}ff_norm.weight": (width,), f"{block}ff_norm.bias": (width,),
                   "proj_out.weight": (width, width), "proj_out.bias": (width,)})
    return shapes


def motion_module_shapes() -> dict[str, tuple[int, ...]]:
    """The AnimateLCM-format SD1.5 motion module's tensors, named as ADE loads them."""
    shapes = {}
    for blocks, widths, per_block in (("down_blocks", MOTION_WIDTHS, DOWN_MODULES),
                                      ("up_blocks", tuple(reversed(MOTION_WIDTHS)), UP_MODULES)):
        for block, width in enumerate(widths):
            for module in range(per_block):
                prefix = f"{blocks}.{block}.motion_modules.{module}.temporal_transformer."
                shapes.update({prefix + name: shape for name, shape in _temporal_transformer_shapes(width).items()})
    return shapes


def _write_seeded(path: Path, shapes: dict, seed: int, extra: dict[str, torch.Tensor] | None = None,
                  scale=lambda name: 1.0) -> Path:
    """Seeded fp16 tensors of ``shapes`` (plus ``extra`` as is) saved to ``path``: safetensors, or a pickled state
    dict where the name ends in ``.ckpt`` (how AnimateLCM publishes its motion module; ComfyUI's ``load_torch_file``
    reads either by the suffix)."""
    from safetensors.torch import save_file

    tensors = dict(extra or {})
    for name, shape in shapes.items():
        tensors[name] = (seeded_value(seed, name, tuple(shape)) * scale(name)).to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ckpt":
        torch.save(tensors, str(path))
    else:
        save_file(tensors, str(path))
    return path


def write_ad_checkpoint(path: Path, plain_checkpoint: Path, seed: int = 40) -> Path:
    """An SD1.5 checkpoint with :data:`AD_UNET_CONFIG`'s UNet (fp16) and the plain test checkpoint's CLIP-L and
    VAE, which ``CheckpointLoaderSimple`` loads as SD1.5 and ADE injects a motion module into."""
    from safetensors import safe_open

    with safe_open(str(plain_checkpoint), "pt") as plain:
        others = {key: plain.get_tensor(key) for key in plain.keys() if not key.startswith(UNET_PREFIX)}
    shapes = {UNET_PREFIX + name: shape for name, shape in unet_shapes().items()}
    return _write_seeded(path, shapes, seed, extra=others)


def write_animatelcm_motion_module(path: Path, seed: int = 50) -> Path:
    """An AnimateLCM-format motion module (``models/animatediff_models``) for the SD1.5 layout, fp16."""
    return _write_seeded(path, motion_module_shapes(), seed,
                         scale=lambda name: PROJ_OUT_SCALE if ".proj_out." in name else 1.0)
