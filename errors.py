"""The pack's error base. Every error the pack raises on purpose is an :class:`LCMPackError`.

It is a ``ValueError`` (bad input: a file, a value, a combination of nodes), so callers that caught
``ValueError`` keep working. One subclass per area, each in its area's package:

* LoRA files and applying them: ``lora.errors.LoraError`` and its subclasses;
* mixing: ``lora.errors.MixError``; export: ``lora.errors.ExportError`` with ``RankError`` (SVD rank) and
  ``ExportPathError`` (file name / folder);
* sampling: :class:`SamplingError` with ``samplers.timesteps.LCMScheduleError`` (the LCM grid) and
  ``host.comfy_model_sampling.LCMSetupError`` (model sampling);
* a ComfyUI internal that does not match what the pack was checked against, with no public path to fall back
  to: :class:`ContactError` (``host/contract/``), naming the contact.

ComfyUI shows the class name and the message to the user, so every message names the value and the fix.
Tests that run the nodes inside ComfyUI compare errors by class name: ComfyUI imports the pack under its own
module name, so its classes are not the objects a test imports as ``lcm_lora_pack``.
"""
from __future__ import annotations


class LCMPackError(ValueError):
    """Base of every error the pack raises on purpose; nothing has been patched or written when it is raised."""


class SamplingError(LCMPackError):
    """LCM / TCD sampling cannot run as asked (grid, steps, denoise, gamma, model sampling)."""


class ContactError(LCMPackError):
    """A ComfyUI internal the pack touches (one contact of ``host/contract/``) does not match this ComfyUI and
    core has no public path the pack could fall back to; the message names the contact and what differed."""
