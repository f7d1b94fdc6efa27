"""The demo's fine-tuned teacher (issue 26): its shipped int8-delta form and the LCM-LoRA's universality.

The delta's arithmetic is checked against plain float math; the shipped fine-tune is assembled as users get it
(teacher + delta + generated CLIP-L), loaded by core's ``CheckpointLoaderSimple`` as SD1.5, and the base
LCM-LoRA -- distilled from the teacher, never from the fine-tune -- draws a fixed prompt at 4 steps as the
fine-tune does: classified right under the stricter check, in the fine-tune's world (small shapes).
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.demo import finetune, world

PROMPT = world.Scene(shape=0, fill=0, background=0)  # "a red circle on a white background"


def _teacher_and_tuned(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    base = {"conv.weight": torch.randn(8, 4, 3, 3, generator=generator).half(),
            "linear.weight": torch.randn(16, 32, generator=generator).half(),
            "norm.bias": torch.randn(16, generator=generator).half()}
    tuned = {k: v.float() + 0.01 * torch.randn(v.shape, generator=generator) for k, v in base.items()}
    return base, tuned


def test_delta_rebuilds_the_fine_tune_within_its_rounding():
    base, tuned = _teacher_and_tuned()
    delta = finetune.quantise_delta(tuned, base)
    assert delta["conv.weight.q"].dtype == torch.int8 and delta["conv.weight.scale"].shape == (8,)
    assert delta["norm.bias.delta"].dtype == torch.float16 and "norm.bias.q" not in delta
    rebuilt = finetune.apply_delta({**base, "vae.other": torch.ones(2)}, delta)
    assert torch.equal(rebuilt["vae.other"], torch.ones(2))  # tensors the delta does not name are kept
    for name, weight in tuned.items():
        assert rebuilt[name].dtype == torch.float16
        change = (weight - base[name].float()).reshape(weight.shape[0], -1).abs().amax(1)
        bound = (change / 254).reshape(-1, *([1] * (weight.ndim - 1))) if weight.ndim > 1 else 1e-5
        fp16 = weight.abs() * 2 ** -10  # one fp16 ulp at most
        assert bool(((rebuilt[name].float() - weight).abs() <= bound + fp16).all()), name
    report = finetune.rounding_report({k: rebuilt[k] for k in tuned}, tuned, base)
    assert report["max_abs_error"] < 0.05 * report["max_abs_change"]


def test_delta_for_another_teacher_is_refused():
    base, tuned = _teacher_and_tuned()
    delta = finetune.quantise_delta(tuned, base)
    other = dict(base, **{"linear.weight": torch.zeros(16, 16).half()})
    with pytest.raises(ValueError, match="linear.weight.q"):
        finetune.apply_delta(other, delta)
    with pytest.raises(ValueError, match="missing"):
        finetune.quantise_delta({k: v for k, v in tuned.items() if k != "norm.bias"}, base)


@pytest.fixture(scope="module")
def tuned(comfy, tmp_path_factory):
    """The teacher, and a fine-tune made by scripts/demo_finetune.py (its CPU size: 3 steps, every UNet weight
    trained, on world.SMALL), shipped as its delta and assembled as users assemble it; both loaded by core's
    ``CheckpointLoaderSimple``. (The GPU-size fine-tune is not shipped: docs/demo_model_card.md.)"""
    import subprocess
    import sys
    from pathlib import Path

    from lcm_lora_pack.demo import comfy_env, files
    from lcm_lora_pack.devkit.host import subprocess_env

    models = files.install(comfy.base / "models")
    teacher, clip, vae = comfy.run_node("CheckpointLoaderSimple", ckpt_name=files.CHECKPOINT)
    table = torch.zeros(len(world.all_captions()), 77, 768)  # the rows this test samples; the rest stay zero
    for index in (0, world.all_captions().index(PROMPT.caption)):
        table[index] = comfy_env.clip_text_encode(clip, world.all_captions()[index])[0].float()
    work = tmp_path_factory.mktemp("finetune")
    files.save_tensors({"embeddings": table}, work / "caption_embeddings.safetensors", dtype=None)
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "scripts" / "demo_finetune.py"), "--embeddings",
                           str(work / "caption_embeddings.safetensors"), "--out", str(work), "--toy"],
                          capture_output=True, text=True, timeout=900, cwd=repo, env=subprocess_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files.assemble_checkpoint(models / "checkpoints" / files.FINETUNE_CHECKPOINT, delta=work / files.FINETUNE_DELTA)
    model = comfy.run_node("CheckpointLoaderSimple", ckpt_name=files.FINETUNE_CHECKPOINT)[0]
    return teacher, model, vae, table


@pytest.mark.slow
def test_fine_tune_loads_as_sd15_with_its_unet_changed_in_full(tuned):
    """A full fine-tune, not a LoRA: most UNet tensors differ in fp16 after 3 warm-up steps (measured 141 of 168;
    the rest are norm scales near 1, whose fp16 spacing is larger than the steps) and a changed attention
    projection's change has full rank, beyond any LoRA's."""
    teacher, model, _, _ = tuned
    assert type(model.model.model_config).__name__ == "SD15"
    before = teacher.model.diffusion_model.state_dict()
    after = model.model.diffusion_model.state_dict()
    assert sorted(before) == sorted(after)
    changed = [name for name in after if not torch.equal(after[name], before[name])]
    assert len(changed) >= 0.8 * len(after), f"only {len(changed)} of {len(after)} UNet tensors changed"
    name = next(n for n in changed if n.endswith("attn1.to_q.weight"))
    assert torch.linalg.matrix_rank((after[name] - before[name]).double()) > 64, name


@pytest.mark.slow
def test_base_lcm_lora_draws_a_fixed_prompt_on_the_fine_tune_at_4_steps(tuned):
    from lcm_lora_pack.demo import evaluate, files, shape_check
    from lcm_lora_pack.host.comfy_apply import apply_lora
    from lcm_lora_pack.lora.io import read_lora_file

    _, model, vae, table = tuned
    lcm = apply_lora(model, None, read_lora_file(files.SHIPPED / files.LCM_LORA)).model
    config = next(c for c in evaluate.CONFIGS if c.name == "ft_lcm_4")
    images = evaluate.generate(lcm, vae, table, torch.tensor([PROMPT.labels]), config, seed=42)
    predicted = files.load_classifier().predict(images)
    assert predicted[0].tolist() == list(PROMPT.labels)
    report = shape_check.check(images, predicted)
    assert bool(report.ok[0]), (report.iou, report.stray)
