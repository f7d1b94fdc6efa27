"""ComfyUI weight adapter for one mixed layer (the bridge between ``lora.mix`` and ``comfy.weight_adapter``).

What core lacks: its ``LoRAAdapter`` multiplies ``up @ down`` by one scalar alpha/rank, so a mix of LoRAs with
different scales λᵢ·αᵢ/rᵢ (LCM-LoRA, arXiv 2311.05556, eq. τ' = Σ λᵢ τᵢ) can only be handed to it as a
pre-scaled float32 up factor — twice the bytes of fp16 files, copied to the GPU for every layer when the model
is loaded. :class:`MixedLoRAAdapter` keeps U' and D' in the files' dtype plus the float32 rank scale c and
builds, on the weight's device,

    ΔW = (U'.to(fp32) · diag(c)) @ D'.to(fp32)

then adds it exactly as core's ``LoRAAdapter.calculate_weight`` does (cast to ``intermediate_dtype``,
``torch.mm`` of the flattened factors, reshape to the weight, ``weight += function((strength·1.0)·ΔW)`` in
the weight's dtype). The float32 numbers are those of the pre-scaled concatenation, so the merged weights
are bit-identical to the former core patch of the float32 concatenation.

It satisfies core's adapter contract (``host.contract.weight_adapter_base``, checked before use): a
``comfy.weight_adapter.WeightAdapterBase`` (``ModelPatcher.add_patches`` stores it and
``comfy.lora.calculate_weight`` -- full loads, the low-VRAM ``LowVramPatch`` -- calls its ``calculate_weight``),
built as ``(loaded_keys, weights)`` with ``weights`` a tuple of tensors: ComfyUI 0.33's Dynamic VRAM rebuilds
every adapter as ``type(a)(a.loaded_keys, prefetched a.weights)`` (``comfy.lora.prefetch_prepared_value``). The
class is made at first use on the base class the contract found (:func:`mixed_adapter_class`), so a renamed base
costs the mixer's adapter (the mixer then applies core ``LoRAAdapter`` patches), not the pack's import. It is not
a ``LoRAAdapter`` subclass on purpose: code that recognises ``LoRAAdapter`` and reads its 6-tuple (``to_train``,
0.8.x's bypass ``h``) would silently drop c. Bypass mode (0.8.x ``BypassInjectionManager``) is refused loudly.
"""
from __future__ import annotations

import functools
import logging

import torch

from ..lora.mix import MixedFactors

LOG = logging.getLogger(__name__)


@functools.cache
def mixed_adapter_class(base: type) -> type:
    """:class:`MixedLoRAMath` as a subclass of core's adapter base class ``base`` (made once per base)."""
    return type("MixedLoRAAdapter", (MixedLoRAMath, base), {"__doc__": MixedLoRAMath.__doc__})


class MixedLoRAMath:
    """One mixed layer: ``weights = (up, down, rank_scale)`` (source dtype, source dtype, float32).

    Core's constructor convention ``(loaded_keys, weights)``; :meth:`from_factors` builds it from the mix.
    """

    name = "lcmpack_lora_mix"

    def __init__(self, loaded_keys, weights):
        self.loaded_keys = loaded_keys
        self.weights = tuple(weights)

    @classmethod
    def from_factors(cls, factors: MixedFactors):
        return cls(set(), (factors.up, factors.down, factors.rank_scale))

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=torch.float32, original_weight=None):
        """``weight + function(strength·ΔW)`` in the order of operations of core's ``LoRAAdapter``.

        The factors travel to ``weight.device`` in their stored dtype and are cast there.
        """
        from comfy import model_management

        up, down, rank_scale = self.weights
        device = weight.device
        up = model_management.cast_to_device(up, device, None).reshape(up.shape[0], -1).to(torch.float32)
        scaled_up = up * model_management.cast_to_device(rank_scale, device, torch.float32)
        mat1 = scaled_up.to(intermediate_dtype)
        mat2 = model_management.cast_to_device(down, device, None).to(intermediate_dtype)
        alpha = 1.0  # the scales are in c; core's alpha/rank is rank/rank for the former concatenation
        try:
            lora_diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
            del mat1, mat2, up, scaled_up
            weight += function(((strength * alpha) * lora_diff).type(weight.dtype))
        except RuntimeError as error:
            raise RuntimeError(f"mixed LoRA layer {key}: factors {tuple(self.weights[0].shape)} x "
                               f"{tuple(self.weights[1].shape)} do not fit the weight {tuple(weight.shape)} "
                               f"({error}); the LoRAs were made for another model.") from error
        return weight

    def to_train(self):
        raise NotImplementedError("a mixed LoRA layer cannot be trained; train the source LoRAs instead.")

    def h(self, x, base_out):
        raise NotImplementedError("a mixed LoRA layer is merged into the weights (ModelPatcher.add_patches), "
                                  "not applied in bypass mode; use the LoRA Mixer's MODEL output as it is.")
