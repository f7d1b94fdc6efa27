"""Short CPU runs of the trainer on the tiny SD1.5-family checkpoint, loaded by real ComfyUI.

* the validation loss (fixed batches, noise, timesteps, w) goes down; the file is kind *lcm* for the pack's
  loader, and core ``LoraLoader`` and diffusers ``load_lora_weights`` + ``fuse_lora`` merge it to equal weights;
* an interrupt leaves the last checkpoint valid and nothing in models/loras; resuming gives the same LoRA as an
  uninterrupted run;
* a NaN loss (a broken patch on the model) stops training with the step named and writes nothing;
* the training clone (``contract.training_clone``): core's private copy, or core's ``clone()`` as the fallback,
  train the same LoRA.
"""
from __future__ import annotations

import logging

import pytest
import torch
from conftest import SD15_CKPT
from harness.diffusers_unet import diffusers_unet, lora_pipeline
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.distill.api import distill_lcm_lora, load_samples
from lcm_lora_pack.distill.config import DistillConfig
from lcm_lora_pack.lora.detect import detect_kind
from lcm_lora_pack.lora.io import read_lora_file
from safetensors import safe_open

FUSE_TOLERANCE = 1e-5


def tiny_config(**overrides) -> DistillConfig:
    values = dict(resolution=64, train_batch_size=2, max_train_steps=4, learning_rate=1e-3, lora_rank=4,
                  lora_alpha=4.0, checkpointing_steps=2, save_dtype="fp32", mixed_precision="no", seed=1)
    return DistillConfig(**(values | overrides))


def write_images(folder, count=4):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand((72, 88, 3), generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"image_{i}.png")
        (folder / f"image_{i}.txt").write_text(f"a photo of object {i}")
    return folder


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:3]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return load_samples(data_dir=write_images(tmp_path_factory.mktemp("distill-data")))


@pytest.fixture(scope="module")
def trained(comfy, sd15, images, tmp_path_factory):
    model, clip, vae = sd15
    loras = comfy.base / "models" / "loras"
    config = tiny_config(max_train_steps=8, validation_draws=2, learning_rate=1e-4)  # the recipe's default lr
    result = distill_lcm_lora(model, clip, images, config, loras, "distilled_sd15", vae=vae,
                              checkpoint_dir=tmp_path_factory.mktemp("distill-run"), source_name=SD15_CKPT)
    return result


def test_short_run_lowers_the_loss_and_writes_an_lcm_lora(trained):
    before, after = trained.validation
    assert after < before, trained.validation
    assert trained.steps == 8 and len(trained.losses) == 8
    lora = read_lora_file(trained.path)
    assert detect_kind(lora)[0] == "lcm"
    with safe_open(str(trained.path), "pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert metadata["lcmpack.kind"] == "lcm" and metadata["lcmpack.base_family"] == "sd1.x"
    assert metadata["lcmpack.distill.steps"] == "8" and len(metadata["lcmpack.distill.data_fingerprint"]) == 16
    assert '"lora_rank": 4' in metadata["lcmpack.distill.hyperparameters"]
    modules = {k.split(".")[0] for k in keys}
    assert all(k.startswith("lora_unet_") for k in modules)
    assert all(f"{m}.alpha" in keys and f"{m}.lora_down.weight" in keys for m in modules)


def test_pack_loader_applies_it_as_lcm(comfy, sd15, trained):
    model, clip, _ = sd15
    patched, _, report = comfy.run_node("LCMPack_LCMLoraLoader", model=model, clip=clip,
                                        lora_name=trained.path.name, strength=1.0, allow_partial=False)
    assert "lcm" in report.lower()
    assert len(patched.patches) == len(trained.lora.adapters)


def _core_merged(comfy, model, clip, name) -> dict[str, torch.Tensor]:
    """Core ``LoraLoader``'s patches merged by core's own ``comfy.lora.calculate_weight`` (what ComfyUI does when
    it loads the patched model), without touching the shared model's weights."""
    import comfy.lora as core_lora

    patched = comfy.run_node("LoraLoader", model=model, clip=clip, lora_name=name, strength_model=1.0,
                             strength_clip=1.0)[0]
    weights = patched.model.diffusion_model.state_dict(prefix="diffusion_model.")
    merged = {key.removeprefix("diffusion_model."): core_lora.calculate_weight(
        patches, weights[key].detach().clone().float(), key) for key, patches in patched.patches.items()}
    return merged, sorted(merged)


def test_core_loraloader_and_diffusers_merge_it_equally(comfy, sd15, trained):
    import comfy.utils as comfy_utils

    model, clip, _ = sd15
    base = {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}
    core, patched_keys = _core_merged(comfy, model, clip, trained.path.name)
    assert len(patched_keys) == len(trained.lora.adapters)
    unet = diffusers_unet(SD15_UNET_CONFIG, base)
    pipeline = lora_pipeline(unet)
    pipeline.load_lora_weights(str(trained.path))
    pipeline.fuse_lora(components=["unet"])
    unet.unload_lora()  # fused weights stay; PEFT's base_layer wrappers go (plain parameter names)
    fused = unet.state_dict()
    to_diffusers = {ldm: d for d, ldm in comfy_utils.unet_to_diffusers(SD15_UNET_CONFIG).items()}
    worst = 0.0
    for key in patched_keys:
        ours, theirs = core[key] - base[key], fused[to_diffusers[key]].reshape(base[key].shape) - base[key]
        assert theirs.norm() > 0, f"diffusers did not apply {key}"
        worst = max(worst, float((ours - theirs).norm() / theirs.norm()))
    assert worst <= FUSE_TOLERANCE, worst


def test_interrupt_keeps_the_checkpoint_and_resume_equals_an_uninterrupted_run(comfy, sd15, images, tmp_path):
    from lcm_lora_pack.distill.checkpoints import list_checkpoints, load_checkpoint

    model, clip, vae = sd15
    loras = comfy.base / "models" / "loras"
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def interrupt_before_step_3():
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop

    run_dir = tmp_path / "run"
    config = tiny_config()
    with pytest.raises(Stop):
        distill_lcm_lora(model, clip, images, config, loras, "interrupted", vae=vae, checkpoint_dir=run_dir,
                         interrupt=interrupt_before_step_3)
    assert not (loras / "interrupted.safetensors").exists()
    (step, path), = list_checkpoints(run_dir)
    assert step == 2 and not [p for p in run_dir.iterdir() if p.suffix == ".tmp"]
    assert load_checkpoint(path, tiny_config().resolved("sd1.x").fingerprint(), images_fingerprint(images))["step"] == 2

    resumed = distill_lcm_lora(model, clip, images, tiny_config(), loras, "resumed", vae=vae,
                               checkpoint_dir=run_dir, resume_from_checkpoint="latest")
    straight = distill_lcm_lora(model, clip, images, tiny_config(), loras, "straight", vae=vae,
                                checkpoint_dir=tmp_path / "straight")
    assert resumed.steps == straight.steps == 4
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    ours, theirs = resumed.lora.state_dict(), straight.lora.state_dict()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-8), key


def images_fingerprint(samples) -> str:
    from lcm_lora_pack.distill.data import data_fingerprint

    return data_fingerprint(samples)


def test_nan_loss_stops_names_the_step_and_writes_nothing(comfy, sd15, images, tmp_path):
    model, clip, vae = sd15
    broken = model.clone()
    key = "diffusion_model.out.2.bias"
    bias = model.model.diffusion_model.out[2].bias
    broken.add_patches({key: (torch.full_like(bias, float("nan")),)}, 1.0)
    loras = comfy.base / "models" / "loras"
    with pytest.raises(Exception) as raised:
        distill_lcm_lora(broken, clip, images, tiny_config(), loras, "nan_run", vae=vae, checkpoint_dir=tmp_path)
    assert type(raised.value).__name__ == "DistillLossError"
    assert "step 1" in str(raised.value) and "no checkpoint" in str(raised.value)
    assert not (loras / "nan_run.safetensors").exists()
    assert not list(tmp_path.iterdir())


def test_training_clone_contact_and_its_fallback_train_the_same_lora(comfy, sd15, tmp_path, caplog):
    """``contract.training_clone``: core's private copy (``clone(force_deepcopy=True)``) where the host has it; a
    model from a loader without ``cached_patcher_init`` (or a host without ``force_deepcopy``) falls back to core's
    ``clone()`` with one report line -- and both train the same LoRA."""
    import inspect

    from lcm_lora_pack.host import contract

    model, clip, _ = sd15
    clone, note = contract.training_clone(model)
    if "force_deepcopy" in inspect.signature(model.clone).parameters:
        assert note is None and clone.model is not model.model
    else:
        assert note.startswith(f"{contract.LINE_PREFIX} training_clone:") and clone.model is model.model
    bare = model.clone()
    bare.cached_patcher_init = None  # as a custom loader leaves it
    shared, note = contract.training_clone(bare)
    assert shared.model is model.model and note.startswith(f"{contract.LINE_PREFIX} training_clone:")

    samples = load_samples(prompts=["a cube", "a red ball"])
    config = tiny_config(max_train_steps=2, teacher_sampling_steps=1)
    with caplog.at_level(logging.WARNING):
        fallback = distill_lcm_lora(bare, clip, samples, config, tmp_path, "fallback")
    assert any(r.getMessage().startswith(f"{contract.LINE_PREFIX} training_clone:") for r in caplog.records)
    usual = distill_lcm_lora(model, clip, samples, config, tmp_path, "usual")
    for key, value in usual.lora.state_dict().items():
        torch.testing.assert_close(fallback.lora.state_dict()[key], value, rtol=1e-5, atol=1e-7)
