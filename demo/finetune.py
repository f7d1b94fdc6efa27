"""The demo's fine-tuned teacher (issue 26): shipped as an int8 delta on the teacher, assembled at set-up.

A full fine-tune changes every UNet weight; as an fp16 UNet it is 51.6 MB, more than the demo's size budget
leaves (models/demo <= 120 MB in all). The shipped file holds the difference to the shipped teacher instead,
``delta = fine-tuned - teacher`` (float32 arithmetic on the fp16 teacher), per tensor:

* two or more dimensions: symmetric int8 with one float32 scale per output row (``scale = max|row| / 127``,
  ``q = round(delta / scale)``), keys ``<name>.q`` and ``<name>.scale``;
* one dimension (biases, norms): the delta in fp16, key ``<name>.delta``.

:func:`apply_delta` rebuilds the fine-tuned UNet as ``fp16(teacher + q * scale)`` -- the same arithmetic where
it was trained and where it is used, so the quality numbers are measured on exactly the weights users load.
Rounding error per weight is at most ``scale / 2`` (max|row| / 254 of the *delta*); scripts/demo_finetune.py
reports it against the trained weights.
"""
from __future__ import annotations

import torch

Q_SUFFIX, SCALE_SUFFIX, DELTA_SUFFIX = ".q", ".scale", ".delta"


def quantise_delta(tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The delta file's tensors for the fine-tuned ``tuned`` against ``base`` (same keys and shapes)."""
    if sorted(tuned) != sorted(base):
        missing, extra = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
        raise ValueError(f"fine-tune and teacher differ in keys: missing {missing[:3]}, extra {extra[:3]}")
    out = {}
    for name, weight in tuned.items():
        delta = weight.float() - base[name].float()
        if delta.ndim < 2:
            out[name + DELTA_SUFFIX] = delta.half()
            continue
        rows = delta.reshape(delta.shape[0], -1)
        scale = rows.abs().amax(1).clamp(min=1e-12) / 127
        out[name + Q_SUFFIX] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(delta.shape)
        out[name + SCALE_SUFFIX] = scale.float()
    return out


def apply_delta(base: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base`` with every tensor the delta names replaced by ``fp16(base + delta)``; other keys (the VAE) kept."""
    out = dict(base)
    for key in delta:
        if key.endswith(DELTA_SUFFIX):
            name = key[:-len(DELTA_SUFFIX)]
            change = delta[key].float()
        elif key.endswith(Q_SUFFIX):
            name = key[:-len(Q_SUFFIX)]
            scale = delta[name + SCALE_SUFFIX].float()
            change = delta[key].float() * scale.reshape(-1, *([1] * (delta[key].ndim - 1)))
        else:
            continue
        if name not in base or base[name].shape != change.shape:
            raise ValueError(f"delta tensor {key!r} matches no teacher tensor of shape {tuple(change.shape)}: the "
                             "delta was made for another teacher; re-make it with scripts/demo_finetune.py")
        out[name] = (base[name].float() + change).to(base[name].dtype)
    return out


def rounding_report(rebuilt: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                    base: dict[str, torch.Tensor]) -> dict[str, float]:
    """What shipping the delta costs: the largest absolute difference of the rebuilt weights from the trained
    ones (fp16 rounding included), next to the largest absolute change the fine-tune made."""
    return {"max_abs_error": max((rebuilt[k].float() - tuned[k].float()).abs().max().item() for k in tuned),
            "max_abs_change": max((tuned[k].float() - base[k].float()).abs().max().item() for k in tuned)}
