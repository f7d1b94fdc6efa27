"""The shape of one accelerator record (pure data: no torch, no ComfyUI).

One :class:`Accelerator` per kind holds everything the pack knows about it: how it is recognised (published
names, a content signature), how its authors sample it (:class:`Recipe`, one or more: a variant is chosen by the
file name), what to mix it with, and where that comes from (:class:`Source`) and where users get the file
(:class:`Download`). ``accelerators.registry.ACCELERATORS`` is the one list of records.
"""
from __future__ import annotations

from dataclasses import dataclass

from .match import NameRule, Tokens

# Families the pack's LoRA loader patches: the SD UNets (lora/detect.py measures them) and the transformer families
# whose LoRA keys ComfyUI core maps (comfy.lora.model_lora_keys_unet), named after core's model_config classes
# (host/comfy_apply.py MODEL_FAMILIES): Flux → flux, SD3 → sd3, QwenImage → qwen-image, WAN21_T2V → wan (Wan 2.1,
# and Wan 2.2's A14B high- and low-noise experts, which core loads as this class), WAN22_T2V → wan2.2-5b.
SD_FAMILIES = ("sd1.x", "sd2.x", "sdxl", "ssd-1b", "vega")
TRANSFORMER_FAMILIES = ("flux", "sd3", "qwen-image", "wan", "wan2.2-5b")
LOADABLE_FAMILIES = SD_FAMILIES + TRANSFORMER_FAMILIES
# A LoRA's module names alone may fit several families (the LoRA side cannot measure widths on a tiny or a pruned
# file): the group names them, and the kind's record narrows it (lora/detect.py narrow_family).
FAMILY_GROUPS = {"wan-any": ("wan", "wan2.2-5b"), "mmdit": ("flux", "sd3", "qwen-image")}


def family_fits(family: str, families: tuple[str, ...]) -> bool:
    """Whether a LoRA of ``family`` (a family, a group of :data:`FAMILY_GROUPS`, or "unknown") may be one of
    ``families`` (a record's, or a model's family as a 1-tuple)."""
    if family == "unknown":
        return True
    return any(f in families for f in FAMILY_GROUPS.get(family, (family,)))


def kind_fits_family(family: str, families: tuple[str, ...]) -> bool:
    """Whether a record for ``families`` may name a LoRA measured as ``family``: an SD-family LoRA takes any SD
    record (a TCD name on an SSD-1B LoRA stays TCD, as before), a transformer family only its own records."""
    if family in SD_FAMILIES:
        return any(f in SD_FAMILIES for f in families)
    return family_fits(family, families)
FORMS = ("lora", "motion-module", "checkpoint")


@dataclass(frozen=True)
class Recipe:
    """One sampling recipe, as its authors' diffusers setup gives it (``guidance_scale=0`` there is cfg 1 here).

    ``sampler`` lcm | tcd | ddim | euler | euler_ancestral; ``schedule`` lcm-grid | trailing | fixed (the timestep
    rules of ``samplers/presets.py``); ``model_sampling`` lcm | tcd | discrete | lcm-full | x0; ``beta_schedule``
    "model" (the checkpoint's own) or diffusers' "linear" (``linspace(β₀, β₁)``: ComfyUI's ``sqrt_linear``), which
    AnimateLCM and AnimateDiff-Lightning use. ``steps``: the step count it was distilled for (None: any; a trailing
    recipe then takes the count its published file name carries). ``when``: the name rule that selects this variant
    of a record (None: the default). ``runs_on``: "ksampler-lcm" (a preset of **KSampler (LCM)** run by the pack's
    samplers), "flow" (a preset of KSampler (LCM) for a rectified-flow family -- FLUX.1, SD3, Qwen-Image, Wan -- that
    runs core's own sampling: the model's flow sampling with ``shift`` set as core's ModelSamplingAuraFlow node sets
    it, core's ``scheduler``, core's Euler: ``host/comfy_flow_presets.py``) or "core" (advice for core's KSampler only:
    Wan 2.2's two experts, which one sampler cannot split). ``expert``: the expert model of a
    two-expert model this file goes on (Wan 2.2's "high-noise" / "low-noise"), which ``when`` also recognises in the
    expert model's own file name (``lora/experts.py``).
    """

    name: str
    sampler: str
    schedule: str
    model_sampling: str
    cfg: float
    source: str
    gamma: float = 0.3
    steps: int | None = None
    timesteps: tuple[int, ...] = ()
    img2img: bool = True
    note: str = ""
    cfg_range: tuple[float, float] | None = None
    beta_schedule: str = "model"
    shift: float | None = None
    guidance: float | None = None
    strength: float = 1.0
    when: NameRule | None = None
    checkpoint: bool = False
    runs_on: str = "ksampler-lcm"
    scheduler: str = ""
    expert: str = ""


@dataclass(frozen=True)
class Source:
    """Where a record's facts come from: the authors' card / README / code, and when it was read."""

    url: str
    date: str
    what: str = ""


@dataclass(frozen=True)
class Download:
    """Where the authors publish a file: repository, file (its path in the repository), the ComfyUI models folder,
    size / sha256 where the card gives them (none of the cards read does), and ``save_as``: the name to save it
    under where the published name is generic (``pytorch_lora_weights.safetensors``) or does not say what the file
    is (Wan 2.2 Lightning's ``high_noise_model.safetensors``), so that detection by name recognises it. The example
    workflows' per-node ``models`` metadata (name, url, directory: what the ComfyUI frontend offers to download) and
    docs' download tables are generated from these."""

    repo: str
    file: str
    directory: str = "loras"
    size: str = ""
    sha256: str = ""
    save_as: str = ""

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.file}"

    @property
    def name(self) -> str:
        """The file name in ComfyUI's models folder: ``save_as``, else the published file's own name."""
        return self.save_as or self.file.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ContentSignature:
    """What the authors' training script writes, precisely enough to recognise a renamed file (LCM-LoRA only).

    ``rank``: every module's rank; ``one_alpha``: one alpha for every module; ``unet_only``; ``groups``: module-name
    suffix patterns (``_`` separators; anchored ``…$`` regexes, linear) that must each match some module; files with
    any of ``refuse_metadata`` keys (kohya's training metadata) never match.
    """

    rank: int
    groups: dict[str, str]
    one_alpha: bool = True
    unet_only: bool = True
    refuse_metadata: tuple[str, ...] = ("ss_network_module", "ss_training_started_at", "ss_session_id")
    description: str = ""


@dataclass(frozen=True)
class Accelerator:
    """One accelerator kind (module docstring). ``names``: first record of the registry with a matching rule wins."""

    kind: str
    title: str
    families: tuple[str, ...]
    form: str
    names: tuple[NameRule, ...]
    published: tuple[str, ...]
    recipes: tuple[Recipe, ...]
    advice: str
    sources: tuple[Source, ...]
    downloads: tuple[Download, ...] = ()
    content: ContentSignature | None = None
    style_weight: str = ""
    notes: tuple[str, ...] = ()

    @property
    def loadable(self) -> bool:
        """The pack's LoRA loader handles it (a LoRA of a family the loader patches)."""
        return self.form == "lora" and any(f in LOADABLE_FAMILIES for f in self.families)

    def name_matches(self, tokens: Tokens) -> bool:
        return any(rule.matches(tokens) for rule in self.names)

    def presets(self) -> tuple[Recipe, ...]:
        """Its recipes that KSampler (LCM) runs."""
        return tuple(r for r in self.recipes if r.runs_on in ("ksampler-lcm", "flow"))

    def recipe_for(self, tokens: Tokens) -> Recipe | None:
        """The variant its file name selects (the first with a matching ``when``), else the default (no ``when``,
        not a checkpoint recipe)."""
        for recipe in self.recipes:
            if recipe.when is not None and recipe.when.matches(tokens):
                return recipe
        return next((r for r in self.recipes if r.when is None and not r.checkpoint), None)
