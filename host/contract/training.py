"""Training: the clone the trainer trains on.

Part of the contract with ComfyUI (:mod:`host.contract`); its rules are in the package docstring."""
from __future__ import annotations

from .base import _parameters, line


def training_clone(patcher) -> tuple[object, str | None]:
    """``(clone, None)``: a clone to train on whose modules no other clone shares -- ``clone(force_deepcopy=True)``,
    what core's ``TrainLoraNode`` trains on (``comfy_extras/nodes_train.py``, checked on 0.33.0): a fresh model
    from the loader's ``cached_patcher_init``, with the patcher's patches, object patches and options copied.

    Hosts whose ``ModelPatcher.clone`` has no ``force_deepcopy`` (0.3.75, 0.8.0, where core's ``TrainLoraNode``
    trains on ``clone()``), or a model from a loader that sets no ``cached_patcher_init`` (core raises there):
    ``(clone(), report line)``, core's plain clone, which shares the module tree; ComfyUI then puts the clone's
    weight functions on the shared modules only while the clone is loaded."""
    if "force_deepcopy" not in _parameters(patcher.clone):
        why = "ModelPatcher.clone has no force_deepcopy (as on 0.3.75 and 0.8.0)"
    elif getattr(patcher, "cached_patcher_init", None) is None:
        why = "the model's loader set no cached_patcher_init (not one of core's loaders)"
    else:
        return patcher.clone(force_deepcopy=True), None
    return patcher.clone(), line("training_clone", why, "training on core's clone(), which shares the UNet's "
                                 "modules with the model while it is loaded, as core's TrainLoraNode does there")
