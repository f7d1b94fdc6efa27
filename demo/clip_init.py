"""The demo's CLIP-L text encoder: full shape, generated per tensor from a seed, never shipped.

ComfyUI's ``CLIPTextEncode`` for SD1.5 runs CLIP-L (12 layers, width 768, 123.7 M parameters) and hands
the UNet the final-layer-normed last hidden state ``[77, 768]``. A plainly random CLIP-L makes every prompt
look alike (whole-sequence cosine 0.99+, ../shared/NOTES.md section 12): each of its 24 residual branches
adds as much as the token embedding itself, and attention averages that over the prompt. Here the branches
that write into the residual stream (attention ``out_proj``, MLP ``fc2``) are scaled by
:data:`RESIDUAL_BRANCH_SCALE`, so the output at a position stays mostly its own token (N(0, 1) embeddings,
nearly orthogonal in 768 dimensions) plus a little position and context: words separate, and the UNet
learns to read them quickly.

Every tensor is drawn from a ``torch.Generator`` seeded by ``sha256("<seed>:<name>")`` (the same name
always gets the same numbers). :func:`fingerprint` summarises the tensors (sum, sum of squares, three
values at fixed positions, in float64); ``models/demo/clip_l_fingerprint.json`` stores the one this
repository was trained with, and :func:`check_fingerprint` raises :class:`ClipFingerprintError` when a
torch version draws different numbers (which would silently change every prompt's embedding).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

CLIP_SEED = 20261201
RESIDUAL_BRANCH_SCALE = 0.1
POSITION_STD = 0.2
FINGERPRINT_RTOL = 1e-5
CLIP_L_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                 "projection_dim": 768}
PREFIX = "cond_stage_model.transformer."


class ClipFingerprintError(RuntimeError):
    """The generated CLIP-L differs from the one the demo models were trained with."""


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def tensor_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of CLIP-L's text model in the layout ComfyUI's loader reads (transformers 4 names)."""
    width, hidden = CLIP_L_CONFIG["hidden_size"], CLIP_L_CONFIG["intermediate_size"]
    shapes = {"text_model.embeddings.token_embedding.weight": (CLIP_L_CONFIG["vocab_size"], width),
              "text_model.embeddings.position_embedding.weight": (CLIP_L_CONFIG["max_position_embeddings"], width),
              "text_model.embeddings.position_ids": (1, CLIP_L_CONFIG["max_position_embeddings"])}
    for i in range(CLIP_L_CONFIG["num_hidden_layers"]):
        layer = f"text_model.encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (width, width)
            shapes[f"{layer}self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = shapes[f"{layer}{norm}.bias"] = (width,)
        shapes.update({f"{layer}mlp.fc1.weight": (hidden, width), f"{layer}mlp.fc1.bias": (hidden,),
                       f"{layer}mlp.fc2.weight": (width, hidden), f"{layer}mlp.fc2.bias": (width,)})
    shapes["text_model.final_layer_norm.weight"] = shapes["text_model.final_layer_norm.bias"] = (width,)
    shapes["text_projection.weight"] = (CLIP_L_CONFIG["projection_dim"], width)
    return shapes


def _draw(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = _generator(seed, name)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("position_ids"):
        return torch.arange(shape[-1]).reshape(shape)
    if name.endswith("token_embedding.weight"):
        return torch.randn(shape, generator=generator)
    if name.endswith("position_embedding.weight"):
        return POSITION_STD * torch.randn(shape, generator=generator)
    if leaf == "weight" and len(shape) == 1:  # layer-norm scales
        return 1 + 0.01 * torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 0.01 * torch.randn(shape, generator=generator)
    scale = 1 / math.sqrt(shape[1])
    if name.endswith(("self_attn.out_proj.weight", "mlp.fc2.weight")):
        scale *= RESIDUAL_BRANCH_SCALE
    return scale * torch.randn(shape, generator=generator)


def clip_l_state_dict(seed: int = CLIP_SEED, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """The full CLIP-L text encoder (float32; ``position_ids`` int64), keys under ``prefix``."""
    return {prefix + name: _draw(name, shape, seed).contiguous() for name, shape in tensor_shapes().items()}


def fingerprint(state_dict: dict[str, torch.Tensor], prefix: str = PREFIX) -> dict[str, list[float]]:
    """Per tensor (name without ``prefix``): sum, sum of squares and the values at flat positions 0, n/2, n-1."""
    out = {}
    for name, tensor in sorted(state_dict.items()):
        if not name.startswith(prefix):
            continue
        flat = tensor.detach().reshape(-1).to(torch.float64)
        n = flat.numel()
        out[name[len(prefix):]] = [flat.sum().item(), (flat * flat).sum().item(),
                                   flat[0].item(), flat[n // 2].item(), flat[n - 1].item()]
    return out


def write_fingerprint(path: Path, seed: int = CLIP_SEED) -> dict:
    record = {"seed": seed, "residual_branch_scale": RESIDUAL_BRANCH_SCALE, "position_std": POSITION_STD,
              "torch": torch.__version__, "tensors": fingerprint(clip_l_state_dict(seed))}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return record


def check_fingerprint(state_dict: dict[str, torch.Tensor], path: Path, prefix: str = PREFIX) -> None:
    """Raise :class:`ClipFingerprintError` unless every tensor matches the stored fingerprint (rtol 1e-5)."""
    stored = json.loads(Path(path).read_text())
    expected, actual = stored["tensors"], fingerprint(state_dict, prefix)
    if sorted(expected) != sorted(actual):
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        raise ClipFingerprintError(f"CLIP-L tensor names differ from {path}: missing {missing[:5]}, "
                                   f"unexpected {extra[:5]}. Regenerate with demo.clip_init.clip_l_state_dict().")
    for name, values in expected.items():
        for want, got in zip(values, actual[name], strict=True):
            if abs(got - want) > FINGERPRINT_RTOL * max(abs(want), 1.0):
                raise ClipFingerprintError(
                    f"CLIP-L tensor {name!r} differs from the fingerprint in {path} ({got!r} != {want!r}): this "
                    f"torch ({torch.__version__}) draws other random numbers than torch {stored['torch']}, "
                    "which trained the demo models, so every prompt would be encoded differently. Use that torch "
                    "version to assemble the checkpoint, or re-train the demo (scripts/demo_train.py).")
