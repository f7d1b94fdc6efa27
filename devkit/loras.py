"""Generated LoRA files for the generated test models (no downloads).

Main entry point::

    make_kohya_lora(unet_config_or_patcher, path, rank=4, alpha=None, seed=0,
                    targets="attention", naming="diffusers", kind=None, metadata=None) -> Path

writes a kohya-format safetensors file (``lora_unet_<name>.lora_down.weight`` / ``.lora_up.weight`` /
``.alpha``) whose modules cover the chosen layers of the UNet described by ``unet_config_or_patcher``
(``models.SD15_UNET_CONFIG``, ``models.VEGA_UNET_CONFIG``, or a ComfyUI ``ModelPatcher``). With
``naming="diffusers"`` module names are diffusers UNet names with ``_`` (the spelling of the published
``lcm-lora-sdv1-5`` / ``lcm-lora-sdxl`` files); with ``naming="ldm"`` they are ComfyUI/LDM names.

``kind="lcm"`` (or "tcd", "hyper-sd", "lightning", "dmd2") writes kohya/modelspec metadata that marks the file
as that kind of acceleration LoRA, the way published and trained files can be recognised
(``modelspec.title``, ``ss_output_name``); ``metadata`` adds/overrides string metadata.

``text_encoder_state_dict(...)`` gives CLIP-L ``lora_te_`` modules to add to a file (see ``save_lora``);
``lora_weight_names(...)`` lists the targeted UNet weights (LDM name → shape), for tests that need them.
Files are written to a temporary name and renamed (never half-written).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

# Published/trained names per kind (what modelspec.title / ss_output_name typically carry).
KIND_TITLES = {
    "lcm": "LCM-LoRA",
    "tcd": "TCD-LoRA",
    "hyper-sd": "Hyper-SD LoRA",
    "lightning": "SDXL-Lightning LoRA",
    "dmd2": "DMD2 LoRA",
}

# Suffixes of the weights each ``targets`` choice covers (LDM names inside transformer blocks).
ATTENTION_SUFFIXES = (
    ".attn1.to_q.weight", ".attn1.to_k.weight", ".attn1.to_v.weight", ".attn1.to_out.0.weight",
    ".attn2.to_q.weight", ".attn2.to_k.weight", ".attn2.to_v.weight", ".attn2.to_out.0.weight",
    ".proj_in.weight", ".proj_out.weight",
)
FEED_FORWARD_SUFFIXES = (".ff.net.0.proj.weight", ".ff.net.2.weight")
# What diffusers' LCM-LoRA training script targets besides attention/ff (train_lcm_distill_lora_sd_wds.py):
# resnet convs, conv_shortcut, time_emb_proj, down/upsampler convs (LDM names below).
RESNET_SUFFIXES = (".in_layers.2.weight", ".out_layers.3.weight", ".emb_layers.1.weight", ".skip_connection.weight",
                   ".op.weight", ".conv.weight")


def _unet_config_of(model_or_config) -> dict:
    if not isinstance(model_or_config, dict):  # a ComfyUI ModelPatcher
        model_or_config = model_or_config.model.model_config.unet_config
    return {k: v for k, v in model_or_config.items() if k not in ("dtype", "device", "operations")}


def unet_weight_shapes(unet_config: dict) -> dict[str, torch.Size]:
    """LDM weight name (without ``diffusion_model.``) → shape, from ComfyUI's UNet built on the meta device."""
    from .host import prepare_import

    prepare_import()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**unet_config, dtype=torch.float32, device="meta",
                         operations=comfy.ops.disable_weight_init)
    return {k: v.shape for k, v in unet.state_dict().items()}


def lora_weight_names(model_or_config, targets: str | tuple[str, ...] = "attention") -> dict[str, torch.Size]:
    """The UNet weights (LDM names, ``...weight``) a LoRA with ``targets`` covers, with their shapes.

    ``targets``: "attention" (q/k/v/out of every attention + proj_in/proj_out), "attention+ff" (adds the
    feed-forward linears), "lcm-full" (adds resnet/sampler convs and time-embedding projections, the layers the
    published LCM-LoRAs cover), or a tuple of weight-name suffixes.
    """
    if targets == "attention":
        suffixes = ATTENTION_SUFFIXES
    elif targets == "attention+ff":
        suffixes = ATTENTION_SUFFIXES + FEED_FORWARD_SUFFIXES
    elif targets == "lcm-full":
        suffixes = ATTENTION_SUFFIXES + FEED_FORWARD_SUFFIXES + RESNET_SUFFIXES
    else:
        suffixes = tuple(targets)
    shapes = unet_weight_shapes(_unet_config_of(model_or_config))
    return {k: s for k, s in sorted(shapes.items()) if k.endswith(suffixes) and len(s) >= 2}


def _ldm_to_diffusers(unet_config: dict) -> dict[str, str]:
    from .host import prepare_import

    prepare_import()
    import comfy.utils

    return {ldm: diff for diff, ldm in comfy.utils.unet_to_diffusers(unet_config).items()}


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"lora:{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def kohya_state_dict(model_or_config, rank: int = 4, alpha: float | None = None, seed: int = 0,
                     targets: str | tuple[str, ...] = "attention", naming: str = "diffusers",
                     include_alpha: bool = True, up_scale: float = 0.1) -> dict[str, torch.Tensor]:
    """The tensors of a kohya LoRA (see module doc). ``alpha`` defaults to ``rank`` (scale 1).

    ``down`` ~ N(0, 1/in) and ``up`` ~ up_scale·N(0, 1/rank), both nonzero so the update is visible.
    Conv 1x1 targets (SD1.5 ``proj_in``/``proj_out``) get (rank, in, 1, 1) / (out, rank, 1, 1) tensors.
    """
    if naming not in ("diffusers", "ldm"):
        raise ValueError(f"naming={naming!r}: use 'diffusers' or 'ldm'")
    unet_config = _unet_config_of(model_or_config)
    names = lora_weight_names(unet_config, targets)
    to_diffusers = _ldm_to_diffusers(unet_config) if naming == "diffusers" else {}
    alpha = float(rank if alpha is None else alpha)
    out: dict[str, torch.Tensor] = {}
    for ldm_name, shape in names.items():
        source = to_diffusers[ldm_name] if naming == "diffusers" else ldm_name
        module = "lora_unet_" + source[: -len(".weight")].replace(".", "_")
        out_features, in_features = int(shape[0]), int(shape[1])
        kernel = tuple(int(d) for d in shape[2:])
        down = torch.randn((rank, in_features, *kernel), generator=_generator(seed, module + ".down"))
        up = torch.randn((out_features, rank, *([1] * len(kernel))), generator=_generator(seed, module + ".up"))
        out[f"{module}.lora_down.weight"] = (down / in_features ** 0.5).contiguous()
        out[f"{module}.lora_up.weight"] = (up * up_scale / rank ** 0.5).contiguous()
        if include_alpha:
            out[f"{module}.alpha"] = torch.tensor(alpha)
    return out


CLIP_L_LAYER_SHAPES = {  # (out, in) of the CLIP-L text encoder's linears, as in core's LORA_CLIP_MAP
    "self_attn_q_proj": (768, 768), "self_attn_k_proj": (768, 768), "self_attn_v_proj": (768, 768),
    "self_attn_out_proj": (768, 768), "mlp_fc1": (3072, 768), "mlp_fc2": (768, 3072),
}


def text_encoder_state_dict(rank: int = 4, alpha: float | None = None, seed: int = 0,
                            layers: range = range(12), prefix: str = "lora_te_") -> dict[str, torch.Tensor]:
    """kohya text-encoder modules (``lora_te_text_model_encoder_layers_<i>_<linear>``) for CLIP-L.

    Merge with :func:`kohya_state_dict` for a LoRA that patches UNet and CLIP (``prefix="lora_te1_"`` for SDXL).
    """
    alpha = float(rank if alpha is None else alpha)
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        for linear, (out_features, in_features) in CLIP_L_LAYER_SHAPES.items():
            module = f"{prefix}text_model_encoder_layers_{layer}_{linear}"
            down = torch.randn((rank, in_features), generator=_generator(seed, module + ".down"))
            up = torch.randn((out_features, rank), generator=_generator(seed, module + ".up"))
            out[f"{module}.lora_down.weight"] = (down / in_features ** 0.5).contiguous()
            out[f"{module}.lora_up.weight"] = (up * 0.1 / rank ** 0.5).contiguous()
            out[f"{module}.alpha"] = torch.tensor(alpha)
    return out


def kind_metadata(kind: str | None, family: str = "sd1.5") -> dict[str, str]:
    """String metadata marking a LoRA as an acceleration LoRA of ``kind`` (kohya + modelspec keys)."""
    if kind is None:
        return {}
    if kind not in KIND_TITLES:
        raise ValueError(f"kind={kind!r}: use one of {sorted(KIND_TITLES)} or None")
    title = f"{KIND_TITLES[kind]} {family}"
    return {"modelspec.title": title, "ss_output_name": title.lower().replace(" ", "-")}


def save_lora(tensors: dict[str, torch.Tensor], path: Path | str,
              metadata: dict[str, str] | None = None) -> Path:
    """Write tensors (+ string metadata) as safetensors via a temporary file and an atomic rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=dict(metadata or {}) or None)
    os.replace(tmp, path)
    return path


def make_kohya_lora(model_or_config, path: Path | str, rank: int = 4, alpha: float | None = None,
                    seed: int = 0, targets: str | tuple[str, ...] = "attention", naming: str = "diffusers",
                    kind: str | None = None, metadata: dict[str, str] | None = None,
                    include_alpha: bool = True) -> Path:
    """Write a kohya-format LoRA for the UNet of ``model_or_config`` to ``path`` and return the path.

    Example: ``make_kohya_lora(SD15_UNET_CONFIG, loras / "lcm-lora-sdv1-5.safetensors", rank=8, alpha=4,
    kind="lcm")``.
    """
    unet_config = _unet_config_of(model_or_config)
    family = "sdxl" if unet_config.get("context_dim") == 2048 else "sd1.5"
    tensors = kohya_state_dict(unet_config, rank=rank, alpha=alpha, seed=seed, targets=targets,
                               naming=naming, include_alpha=include_alpha)
    meta = kind_metadata(kind, family)
    meta.update(metadata or {})
    return save_lora(tensors, path, meta)
