"""The trainer's side of ComfyUI: a MODEL (``ModelPatcher``) and CLIP/VAE turned into the recipe's tensors.

* The teacher is the ComfyUI model as loaded (its patches, e.g. a style LoRA, included):
  ``comfy.model_management.load_models_gpu`` puts it on the device, then its ``diffusion_model`` (ComfyUI's
  ``UNetModel``) is called directly with VP inputs x_t and integer-valued timesteps, which is what diffusers'
  ``UNet2DConditionModel`` receives in the reference scripts (same weights through ``comfy.utils.unet_to_diffusers``).
* Schedule: ᾱ_t = 1/(1 + σ_t²) from the model's ``model_sampling`` (honours ModelSamplingDiscrete patches);
  prediction type from ``model.model_type`` (EPS, V_PREDICTION).
* Text: ``clip.encode_from_tokens(..., return_pooled=True)``, first 77 tokens (the scripts truncate); the
  unconditional input is the empty prompt for SD1.x/SD2.x and zeros for the SDXL family (as the scripts do).
* SDXL's added conditions: ``model.encode_adm`` (pooled text, original size, crop top-left, target size).
* Latents: ``vae.encode`` then ``model.process_latent_in`` (the family's scaling factor).
"""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field

import torch

from ..host import contract
from .config import SDXL_FAMILIES
from .errors import DistillModelError

LOG = logging.getLogger(__name__)
# ComfyUI model_config class (or a base class of it) → family
FAMILY_CLASSES = {"SD15": "sd1.x", "SD20": "sd2.x", "SDXL": "sdxl", "SSD1B": "ssd-1b", "Segmind_Vega": "vega"}
UNSUPPORTED_HINT = "Use an SD1.x, SD2.x, SDXL, SSD-1B or Segmind Vega checkpoint (the families LCM-LoRA covers)."
TOKENS = 77


@dataclass
class TeacherInfo:
    """What the recipe needs to know about the ComfyUI model."""

    patcher: object
    family: str
    prediction: str
    alphas_cumprod: torch.Tensor
    name_map: dict[str, str] = field(repr=False)

    @property
    def diffusion_model(self) -> torch.nn.Module:
        return self.patcher.model.diffusion_model

    @property
    def is_sdxl(self) -> bool:
        return self.family in SDXL_FAMILIES


def model_family(patcher) -> str:
    config = getattr(getattr(patcher, "model", None), "model_config", None)
    if config is None or not hasattr(patcher.model, "diffusion_model"):
        raise DistillModelError(f"the model input is not a ComfyUI diffusion model ({type(patcher).__name__}); "
                                "connect the MODEL output of a checkpoint loader.")
    family = contract.config_family(config, FAMILY_CLASSES)  # core's model-config classes by identity
    if family is not None:
        return family
    raise DistillModelError(f"model family {type(config).__name__} is not supported for LCM distillation. "
                            + UNSUPPORTED_HINT)


def prediction_type(sampling) -> str:
    """"epsilon" / "v_prediction" from the class of ComfyUI's (possibly patched) ``model_sampling`` object."""
    import comfy.model_sampling as ms

    names = {ms.EPS: "epsilon", ms.V_PREDICTION: "v_prediction"}
    core = contract.core_sampling_classes() - {ms.ModelSamplingDiscrete}  # by identity, not module name
    for cls in type(sampling).__mro__:
        if cls in core:
            if cls in names and isinstance(sampling, ms.ModelSamplingDiscrete):
                return names[cls]
            break
    raise DistillModelError(f"prediction / schedule {type(sampling).__name__} is not supported; the LCD recipe needs "
                            "an eps- or v-prediction teacher on a discrete 1000-step DDPM schedule.")


def inspect_model(patcher) -> TeacherInfo:
    """Family, prediction type, schedule and diffusers name map of a ComfyUI model; typed errors otherwise."""
    import comfy.utils

    family = model_family(patcher)
    unet_config = patcher.model.model_config.unet_config
    if unet_config.get("in_channels", 4) != 4:
        raise DistillModelError(f"this {family} model has {unet_config['in_channels']} input channels (an inpainting "
                                "or instruct model); distil from the plain text-to-image model. " + UNSUPPORTED_HINT)
    sampling = patcher.get_model_object("model_sampling")
    prediction = prediction_type(sampling)
    sigmas = sampling.sigmas.detach().to("cpu", torch.float64)
    if sigmas.numel() != 1000:
        raise DistillModelError(f"the model's schedule has {sigmas.numel()} timesteps; the recipe needs 1000.")
    name_map = comfy.utils.unet_to_diffusers(unet_config)
    return TeacherInfo(patcher=patcher, family=family, prediction=prediction,
                       alphas_cumprod=1.0 / (1.0 + sigmas ** 2), name_map=name_map)


def encode_texts(clip, captions: list[str], sdxl: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context (N, 77, D) and pooled (N, P) (SDXL only) of each caption, on the CPU in float32."""
    contexts, pooled = [], []
    for caption in captions:
        cond, pool = clip.encode_from_tokens(clip.tokenize(caption), return_pooled=True)
        contexts.append(cond[:, :TOKENS].float().cpu())
        if sdxl:
            pooled.append(pool.float().cpu())
    return torch.cat(contexts), (torch.cat(pooled) if sdxl else None)


def unconditional(clip, sdxl: bool, like_context: torch.Tensor, like_pooled: torch.Tensor | None):
    """(1, 77, D) context and (1, P) pooled of the unconditional branch: "" (SD1.x/2.x) or zeros (SDXL)."""
    if sdxl:
        return torch.zeros_like(like_context[:1]), torch.zeros_like(like_pooled[:1])
    context, _ = encode_texts(clip, [""], sdxl=False)
    return context, None


def sdxl_adm(patcher, pooled: torch.Tensor, original_sizes, crops, resolution: int) -> torch.Tensor:
    """SDXL's ``y`` (N, 2816): pooled text + Fourier features of (orig h, orig w, crop top, crop left, h, w)."""
    rows = []
    for i in range(pooled.shape[0]):
        (height, width), (top, left) = original_sizes[i], crops[i]
        rows.append(patcher.model.encode_adm(pooled_output=pooled[i:i + 1], width=width, height=height, crop_w=left,
                                             crop_h=top, target_width=resolution, target_height=resolution))
    return torch.cat(rows).float().cpu()


def encode_latents(vae, patcher, pixels: torch.Tensor) -> torch.Tensor:
    """Scaled latents of pixels (N, H, W, 3) in [0, 1]: ``process_latent_in(vae.encode(pixels))``."""
    raw = vae.encode(pixels)
    return patcher.model.process_latent_in(raw.float().cpu())


def training_model(patcher, private: bool = True):
    """The patcher the trainer runs: a clone of the user's ``patcher`` (``contract.training_clone``: core's
    ``clone(force_deepcopy=True)``, a private copy of the model, where the host and loader allow it; else core's
    ``clone()``, logged). The user's patcher and every other clone are never changed: the trainer's LoRA is
    registered on this clone as ComfyUI weight functions (:func:`install_lora`), which ComfyUI puts on the
    modules when it loads the clone and takes off when it loads another clone of the model. ``private=False``
    (the CLI, whose model nothing else uses): core's ``clone()`` without a second copy of the model.

    Every weight or bias of a ComfyUI layer that is an inference tensor (ComfyUI loads models under
    ``torch.inference_mode``) or requires grad (0.3.75 loads them so) gets :func:`~.lora_layers.frozen_weight`
    here, before the clone is first loaded: the teacher and the student then compute with plain, gradient-free
    copies, and the stored tensors are never replaced, saved for backward or given a gradient.

    Call under ``torch.inference_mode(False)`` (a private copy is then loaded with plain tensors)."""
    from .lora_layers import frozen_weight

    if private:
        clone, note = contract.training_clone(patcher)
        if note:
            LOG.warning("%s", note)
    else:
        clone = patcher.clone()
    for name, module in clone.model.diffusion_model.named_modules():
        if hasattr(module, "weight_function"):
            for param in ("weight", "bias"):
                if _needs_copy(getattr(module, param, None)):
                    clone.add_weight_wrapper(f"diffusion_model.{name}.{param}", frozen_weight)
    return clone


def _needs_copy(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and (tensor.is_inference() or tensor.requires_grad)


def install_lora(clone, lora) -> None:
    """Register ``lora``'s weight functions on ``clone`` (``ModelPatcher.add_weight_wrapper``, as core's
    ``TrainLoraNode`` does). ``add_weight_wrapper`` gives the clone a new ``patches_uuid`` (core, 0.3.75 …
    0.33.0), so the next load of the clone puts the functions on the modules and the next load of any other clone
    of the model (the user's) re-patches and takes them off."""
    functions = lora.weight_functions()
    for name, module in clone.model.diffusion_model.named_modules():
        if name in functions and hasattr(module, "weight_function"):
            clone.add_weight_wrapper(f"diffusion_model.{name}.weight", functions.pop(name))
    if functions:
        raise DistillModelError(f"{len(functions)} LoRA target(s) are not ComfyUI layers that take weight functions "
                                f"({next(iter(functions))}); leave them out of lora_target_modules.")


def load_for_training(clone) -> torch.device:
    """Load the training clone fully on ComfyUI's device (``load_models_gpu``, as core's ``TrainLoraNode``); its
    weight functions go onto the modules. Called before every step: a no-op while the clone stays loaded, a
    reload when anything else loaded the model in between (ComfyUI then took the functions off)."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([clone], force_full_load=True)
    return comfy.model_management.get_torch_device()


def weight_dtype(unet: torch.nn.Module) -> torch.dtype:
    return next(unet.parameters()).dtype


class UNetRunner:
    """Calls the ComfyUI ``UNetModel`` with the trainer's precision policy.

    Compute dtype: the weights' dtype when they are fp16/bf16 (ComfyUI's GPU default), else the mixed-precision
    choice (fp16 becomes fp32 on the CPU); autocast runs with it unless it is fp32. Outputs are float32.
    """

    def __init__(self, patcher, mixed_precision: str, device: torch.device):
        self.patcher = patcher
        self.unet = patcher.model.diffusion_model
        self.device = device
        stored = weight_dtype(self.unet)
        requested = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
        if device.type == "cpu" and requested == torch.float16:
            LOG.info("fp16 autocast is not used on the CPU (slow and lossy there): training in fp32")
            requested = torch.float32
        self.compute_dtype = stored if stored in (torch.float16, torch.bfloat16) else requested
        self.input_dtype = stored if stored != torch.float32 else torch.float32
        self.transformer_options = dict(patcher.model_options.get("transformer_options", {}))

    def load(self) -> None:
        """(Re)load the patcher with its weight functions (:func:`load_for_training`)."""
        load_for_training(self.patcher)

    def autocast(self):
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None):
        cast = self.input_dtype
        with self.autocast():
            out = self.unet(x.to(cast), timesteps=t.float(), context=context.to(cast),
                            y=None if y is None else y.to(cast), transformer_options=dict(self.transformer_options))
        return out.float()


def _checkpointed(forward, *args, **kwargs):
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


@contextlib.contextmanager
def gradient_checkpointing(unet: torch.nn.Module, enabled: bool):
    """Recompute each UNet block in the backward pass (as core's TrainLoraNode does); restored on exit.

    The trainer's one change to a module: ComfyUI's ``UNetModel`` has no extension point that wraps a whole block
    (its ``transformer_options`` patches act inside blocks), so each block's ``forward`` is swapped for a
    checkpointed call, as core's ``TrainLoraNode`` does (``patch``/``unpatch`` in ``comfy_extras/nodes_train.py``).
    The trainer enters this for one step's forward and backward only and the ``finally`` restores the blocks, so
    between steps -- where interrupts, progress and anything else run -- no block carries it; on a private
    training clone (``contract.training_clone``) no other clone shares the blocks at all."""
    blocks = [*getattr(unet, "input_blocks", []), getattr(unet, "middle_block", None),
              *getattr(unet, "output_blocks", [])] if enabled else []
    blocks = [b for b in blocks if b is not None]
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward
