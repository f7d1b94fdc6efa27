"""The main job on the demo family: per prompt, five ComfyUI graphs side by side on one sheet.

Columns (issue 13): teacher 25-step DPM++ 2M cfg 7.5 | teacher 4-step (same sampler) | LCM-LoRA 4-step LCM
cfg 1 | LCM-LoRA + style 4-step | teacher + style 25-step; then (issue 24) the control -- the prompt's shape
as a mask at another place and size (:func:`control_mask`) -- and, with the demo ControlNet applied to it:
teacher 25-step | LCM-LoRA 4-step | LCM-LoRA + style 4-step. Each column is an API prompt of core and pack
nodes (``CheckpointLoaderSimple``, ``CLIPTextEncode``, ``LCMPack_LCMLoraLoader``, ``LoraLoaderModelOnly``,
``LoadImage``, ``ControlNetLoader``, ``ControlNetApplyAdvanced``, ``KSampler``, ``LCMPack_KSamplerLCM``,
``VAEDecode``, ``SaveImage``) validated and executed by ComfyUI's own executor; the control column shows the
mask image itself. One executor with ComfyUI's classic cache runs them all, so a column's seconds are what a user
re-queueing sees (model loading and prompt encoding cached; LoRA patching and sampling counted). Under each
image: seconds and the attribute classifier's verdict.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..devkit.host import EXECUTOR_CACHE_ARGS
from . import files, shape_check, world

LOG = logging.getLogger(__name__)
DEFAULT_PROMPTS = ((0, 0, 0), (2, 2, 1), (3, 3, 2))  # (shape, fill, background): red circle/white, ...
SEED = 42
NEGATIVE = ""


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    steps: int
    lcm: bool = False
    style: bool = False
    control: bool = False
    graph: bool = True


COLUMNS = (
    Column("teacher25", "teacher 25-step DPM++ 2M cfg 7.5", 25),
    Column("teacher4", "teacher 4-step DPM++ 2M cfg 7.5", 4),
    Column("lcm4", "LCM-LoRA 4-step LCM cfg 1", 4, lcm=True),
    Column("lcm4style", "LCM-LoRA + style 4-step", 4, lcm=True, style=True),
    Column("teacher25style", "teacher + style 25-step", 25, style=True),
    Column("control", "control: the mask (ControlNet input)", 0, graph=False),
    Column("teacher25cn", "teacher 25-step + ControlNet", 25, control=True),
    Column("lcm4cn", "LCM-LoRA 4-step + ControlNet", 4, lcm=True, control=True),
    Column("lcm4stylecn", "LCM-LoRA + style 4-step + ControlNet", 4, lcm=True, style=True, control=True),
)


def sheet_columns(folder: Path = files.SHIPPED) -> tuple[Column, ...]:
    """The columns to run: all of :data:`COLUMNS`, or the first five where the ControlNet is not in ``folder``
    (it is made by scripts/demo_controlnet.py on a GPU and committed once)."""
    if (folder / files.CONTROLNET).is_file():
        return COLUMNS
    return tuple(c for c in COLUMNS if c.graph and not c.control)


@dataclass
class Cell:
    column: Column
    image: Path | None = None
    seconds: float = 0.0
    verdict: str = ""
    correct: bool = False
    error: str = ""
    iou: float | None = None  # ControlNet columns: IoU of the drawn shape with the control mask


@dataclass
class SheetResult:
    caption: str
    sheet: Path | None = None
    cells: list[Cell] = field(default_factory=list)


def control_mask(scene: world.Scene, path: Path, seed: int = SEED) -> Path:
    """The control of ``scene``'s sheet: its shape's mask (white on black PNG) at a place and size drawn from
    ``world.CONTROL_PLACEMENT`` with ``seed``, saved at ``path`` (for ``LoadImage``)."""
    from PIL import Image

    labels = torch.tensor([scene.labels])
    _, coverage = world.render_with_masks(labels, torch.Generator().manual_seed(seed),
                                          jitter=world.CONTROL_PLACEMENT)
    pixels = (coverage[0] * 255).round().to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy(), mode="L").convert("RGB").save(path)
    return path


def _add_control(prompt: dict, control_image: str) -> None:
    """``LoadImage`` -> ``ControlNetApplyAdvanced`` (the shipped demo ControlNet, strength 1) on both prompts."""
    prompt["hint"] = {"class_type": "LoadImage", "inputs": {"image": control_image}}
    prompt["cnet"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": files.CONTROLNET}}
    prompt["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cnet", 0], "image": ["hint", 0],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}


def column_prompt(column: Column, scene: world.Scene, prefix: str, control_image: str | None = None) -> dict:
    """The API prompt of one column (``control_image``: the mask's name in ComfyUI's input folder, for the
    ControlNet columns)."""
    caption = world.Scene(scene.shape, scene.fill, scene.background, column.style).caption
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": files.CHECKPOINT}},
        "latent": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": world.RESOLUTION, "height": world.RESOLUTION, "batch_size": 1}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["decode", 0]}},
    }
    model = ["ckpt", 0]
    if column.lcm:
        prompt["lcm"] = {"class_type": "LCMPack_LCMLoraLoader",
                         "inputs": {"lora_name": files.LCM_LORA, "strength": 1.0, "allow_partial": False,
                                    "model": model, "clip": ["ckpt", 1]}}
        model = ["lcm", 0]
    if column.style:
        prompt["style"] = {"class_type": "LoraLoaderModelOnly",
                           "inputs": {"lora_name": files.STYLE_LORA, "strength_model": 1.0, "model": model}}
        model = ["style", 0]
    prompt["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": caption, "clip": ["ckpt", 1]}}
    prompt["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["ckpt", 1]}}
    links = {"model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0]}
    if column.control:
        _add_control(prompt, control_image)
        links.update(positive=["apply", 0], negative=["apply", 1])
    if column.lcm:
        prompt["sampler"] = {"class_type": "LCMPack_KSamplerLCM", "inputs": {
            "seed": SEED, "steps": column.steps, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0, **links}}
    else:
        prompt["sampler"] = {"class_type": "KSampler", "inputs": {
            "seed": SEED, "steps": column.steps, "cfg": 7.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "denoise": 1.0, **links}}
    return prompt


class _Stub:
    """Stands in for ``PromptServer`` in-process (the executor sends its messages here)."""

    def __init__(self) -> None:
        self.client_id, self.last_node_id, self.last_prompt_id = None, None, None
        self.sockets_metadata: dict = {}
        self.messages: list = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))

    def queue_updated(self) -> None:
        pass


class CachedRunner:
    """Validate and execute API prompts on one ``PromptExecutor`` with ComfyUI's classic cache."""

    def __init__(self, execution) -> None:
        self.execution = execution
        self.stub = _Stub()
        self.executor = execution.PromptExecutor(self.stub, cache_type=execution.CacheType.CLASSIC,
                                                 cache_args=dict(EXECUTOR_CACHE_ARGS))

    def run(self, prompt: dict) -> dict:
        ok, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        if not ok or node_errors:
            raise RuntimeError(f"prompt invalid: {error} {node_errors}")
        self.stub.messages.clear()
        self.executor.execute(prompt, str(uuid.uuid4()), {"client_id": "demo"}, outputs)
        if not self.executor.success:
            errors = [data for event, data in self.stub.messages if event == "execution_error"]
            raise RuntimeError(f"execution failed: {errors[:1] or self.stub.messages[-3:]}")
        return self.executor.history_result.get("outputs", {})


def load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        return array.reshape(image.height, image.width, 3).permute(2, 0, 1).float().div(255)


def verdict(classifier, image: torch.Tensor, scene: world.Scene) -> tuple[str, bool]:
    """The classifier's reading of ``image`` as words, and whether it matches ``scene`` (style included) with a
    well-formed shape (the stricter check, :mod:`.shape_check`; a malformed one is said so)."""
    labels = classifier.predict(image[None])
    predicted = world.Scene.from_labels(labels[0].tolist())
    check = shape_check.check(image[None], labels)
    words = predicted.caption.removeprefix("a ").replace(" background", "")
    if not bool(check.ok[0]):
        words += f" (malformed, IoU {check.iou[0]:.2f})"
    return words, predicted.labels == scene.labels and bool(check.ok[0])


def compose(result: SheetResult, path: Path, scale: int = 2) -> Path:
    """One PNG: the caption, then per column its title, the image (``scale`` x nearest), seconds and verdict."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    size, pad, head, foot = world.RESOLUTION * scale, 8, 36, 36
    width = pad + len(result.cells) * (size + pad)
    sheet = Image.new("RGB", (width, 28 + head + size + foot + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), f'prompt: "{result.caption}" (+ ", {world.STYLE_TRIGGER}" in the style columns), seed {SEED}',
              fill="black", font=font)
    for index, cell in enumerate(result.cells):
        x, y = pad + index * (size + pad), 28
        title = cell.column.title.split(" ", 3)
        draw.text((x, y), " ".join(title[:3]), fill="black", font=font)
        draw.text((x, y + 14), " ".join(title[3:]), fill="black", font=font)
        if cell.image is not None:
            with Image.open(cell.image) as image:
                sheet.paste(image.convert("RGB").resize((size, size), Image.NEAREST), (x, y + head))
        colour = (0, 120, 0) if cell.correct else (200, 0, 0)
        note = "failed" if cell.error else (f"{cell.seconds:.1f} s" if cell.column.graph else "")
        if cell.iou is not None:
            note += f", mask IoU {cell.iou:.2f}"
        draw.text((x, y + head + size + 4), note, fill="black", font=font)
        draw.text((x, y + head + size + 18), ("ok: " if cell.correct else "WRONG: ") + (cell.verdict or cell.error[:40]),
                  fill=colour, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _control_cell(column: Column, mask: Path, image: Path) -> Cell:
    import shutil

    image.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mask, image)
    return Cell(column, image=image, verdict="the shape's mask", correct=True)


def _mask_iou(image: torch.Tensor, mask: Path) -> float:
    from .geometry import foreground_mask, mask_iou

    return mask_iou(foreground_mask(image[None]), load_png(mask)[:1] > 0.5).item()


def run_sheet(runner: CachedRunner, output_dir: Path, scene: world.Scene, classifier, out: Path,
              input_dir: Path | None = None, columns: tuple[Column, ...] | None = None) -> SheetResult:
    """Run the columns (default :func:`sheet_columns`) of one prompt, classify their images and write
    ``out/<caption>.png``; the control mask is written to ComfyUI's ``input_dir`` (default: beside
    ``output_dir``)."""
    import shutil

    result = SheetResult(scene.caption)
    slug = scene.caption.removeprefix("a ").replace(" ", "_")
    mask_name = f"demo_control_{slug}.png"
    mask = control_mask(scene, (input_dir or output_dir.parent / "input") / mask_name)
    for column in columns or sheet_columns():
        if not column.graph:
            result.cells.append(_control_cell(column, mask, out / "images" / f"{slug}_{column.key}.png"))
            continue
        cell = Cell(column)
        target_scene = world.Scene(scene.shape, scene.fill, scene.background, column.style)
        start = time.perf_counter()
        try:
            outputs = runner.run(column_prompt(column, scene, f"demo_{slug}_{column.key}", mask_name))
        except RuntimeError as error:
            cell.error = str(error)[:300]
            LOG.error("%s / %s failed: %s", scene.caption, column.key, cell.error)
        cell.seconds = time.perf_counter() - start
        if not cell.error:
            saved = outputs["save"]["images"][0]
            cell.image = out / "images" / f"{slug}_{column.key}.png"
            cell.image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(output_dir / saved.get("subfolder", "") / saved["filename"], cell.image)
            cell.verdict, cell.correct = verdict(classifier, load_png(cell.image), target_scene)
            if column.control:
                cell.iou = _mask_iou(load_png(cell.image), mask)
        result.cells.append(cell)
    result.sheet = compose(result, out / f"sheet_{slug}.png")
    return result


def _summary_cell(cell: Cell) -> str:
    if not cell.column.graph:
        return cell.verdict
    text = f"{cell.seconds:.1f} s, {'ok' if cell.correct else 'WRONG'} ({cell.verdict or 'failed'})"
    return text + (f", mask IoU {cell.iou:.2f}" if cell.iou is not None else "")


def summary_markdown(results: list[SheetResult], quality_table: str | None) -> str:
    """The main job's report: one row per prompt (seconds and verdict per column), then the quality table."""
    columns = [cell.column for cell in results[0].cells] if results else list(sheet_columns())
    header = "| prompt | " + " | ".join(c.title for c in columns) + " |"
    lines = ["# Demo family: side-by-side sheets", "", "Seconds per column on this machine (model loading and "
             "prompt encoding cached, as when re-queueing); verdict = the attribute classifier's reading.", "",
             header, "|---|" + "---|" * len(columns)]
    for result in results:
        cells = [_summary_cell(c) for c in result.cells]
        lines.append(f"| {result.caption} | " + " | ".join(cells) + " |")
    lines += ["", "Sheets: " + ", ".join(r.sheet.name for r in results if r.sheet), ""]
    lines += ["## Quality table (scripts/demo_evaluate.py, shipped numbers)", ""]
    lines.append(quality_table or "No quality numbers shipped yet (models/demo/quality.json is missing).")
    return "\n".join(lines) + "\n"
