"""The shipped demo family (models/demo) as ComfyUI and the pack see it, and the seeded CLIP-L's fingerprint.

Functional checks of the committed files: the checkpoint is an SD1.5 checkpoint to core's loader, the pack's
LoRA reader calls the distilled LoRA "lcm" and the style LoRA "style" (both applied without a missing
module), and one fixed prompt's 4-step LCM-LoRA image and 25-step teacher image are read back by the
attribute classifier as that prompt.
"""
from __future__ import annotations

import pytest
import torch
from lcm_lora_pack.demo import clip_init, comfy_env, evaluate, files, world

pytestmark = pytest.mark.slow
PROMPT = world.Scene(shape=2, fill=2, background=1)  # "a blue triangle on a black background"


def test_shipped_checkpoint_loads_with_core_loader_as_sd15(demo_checkpoint):
    model, clip, vae = demo_checkpoint
    assert type(model.model.model_config).__name__ == "SD15"
    assert model.model.model_config.unet_config["context_dim"] == 768
    assert clip is not None and vae.latent_channels == 4


@pytest.mark.parametrize(("name", "kind"), [(files.LCM_LORA, "lcm"), (files.STYLE_LORA, "style")])
def test_demo_loras_are_detected_and_cover_the_model(demo_checkpoint, name, kind):
    from lcm_lora_pack.host.comfy_apply import apply_lora
    from lcm_lora_pack.lora.io import read_lora_file

    lora = read_lora_file(files.SHIPPED / name)
    assert (lora.kind, lora.family) == (kind, "sd1.x")
    result = apply_lora(demo_checkpoint[0], None, lora)  # raises on any module that matches no weight
    assert result.applied and not any(line.startswith("PARTIAL") for line in result.lines)


def test_clip_fingerprint_passes_and_fails_on_a_changed_tensor():
    state = clip_init.clip_l_state_dict()
    fingerprint = files.SHIPPED / files.FINGERPRINT
    clip_init.check_fingerprint(state, fingerprint)
    name = clip_init.PREFIX + "text_model.final_layer_norm.bias"
    state[name] = state[name].clone()
    state[name][7] += 1e-3
    with pytest.raises(clip_init.ClipFingerprintError, match="final_layer_norm.bias"):
        clip_init.check_fingerprint(state, fingerprint)


def _embeddings(clip, scene: world.Scene) -> torch.Tensor:
    """A caption table with the rows this prompt needs: the empty caption and the prompt's."""
    table = torch.zeros(len(world.all_captions()), 77, 768)
    table[0] = comfy_env.clip_text_encode(clip, "")[0].float()
    table[world.all_captions().index(scene.caption)] = comfy_env.clip_text_encode(clip, scene.caption)[0].float()
    return table


def test_lcm_lora_4_steps_and_teacher_25_steps_draw_the_prompt(demo_checkpoint):
    from lcm_lora_pack.host.comfy_apply import apply_lora
    from lcm_lora_pack.lora.io import read_lora_file

    model, clip, vae = demo_checkpoint
    embeddings = _embeddings(clip, PROMPT)
    lcm = apply_lora(model, None, read_lora_file(files.SHIPPED / files.LCM_LORA)).model
    classifier = files.load_classifier()
    labels = torch.tensor([PROMPT.labels])
    configs = {c.name: c for c in evaluate.CONFIGS}
    for patched, config in ((lcm, configs["lcm_4"]), (model, configs["teacher_25"])):
        images = evaluate.generate(patched, vae, embeddings, labels, config, seed=42)
        assert images.shape == (1, 3, world.RESOLUTION, world.RESOLUTION)
        assert classifier.predict(images)[0].tolist() == list(PROMPT.labels), config.name


def test_frechet_floor_rows_sit_far_below_a_wrong_prompt_set(demo_checkpoint):
    """The floor rows (a second real draw, and it through the VAE) are classified as their prompts and sit far
    below a set of the wrong distribution (every image one prompt): the reference the sampled rows are read
    against."""
    _, _, vae = demo_checkpoint
    classifier = files.load_classifier()
    labels = world.random_labels(64, torch.Generator().manual_seed(3))
    reference = world.render(labels, torch.Generator().manual_seed(4))
    _, real_features = evaluate.classify(classifier, reference)
    rows = evaluate.floor_rows(vae, classifier, labels, 5, real_features)
    wrong = world.render(labels[:1].repeat(len(labels), 1), torch.Generator().manual_seed(6))  # one prompt only
    _, wrong_features = evaluate.classify(classifier, wrong)
    wrong_distance = evaluate.frechet_distance(wrong_features, real_features)
    assert set(rows) == {"real_redraw", "real_vae"}
    for row in rows.values():
        assert row["accuracy"]["joint"] == 1.0, row
        assert 0.0 <= row["frechet"] < 0.5 * wrong_distance, (row, wrong_distance)
