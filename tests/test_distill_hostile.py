"""Hostile and careless input to the trainer (issue 22 items 2, 3 and its weak messages): every option finite and
in range before anything runs, bounded text, typed errors that name the file or option and the fix, checks of
the run's outputs before training. Real ComfyUI in-process (the CLI's ``main`` in-process too)."""
from __future__ import annotations

import inspect
import logging
import re

import pytest
import torch
from conftest import SD15_CKPT, VEGA_UNET
from lcm_lora_pack.devkit.host import comfyui_root
from lcm_lora_pack.distill import cli
from lcm_lora_pack.distill.api import distill_lcm_lora, load_samples
from lcm_lora_pack.distill.config import DistillConfig
from lcm_lora_pack.distill.data import MAX_CAPTION_FILE_BYTES, MAX_PROMPT_CHARS, bounded_text
from lcm_lora_pack.distill.errors import (
    DistillCheckpointError,
    DistillConfigError,
    DistillDataError,
    DistillLossError,
    DistillModelError,
)
from lcm_lora_pack.distill.trainer import Trainer
from lcm_lora_pack.errors import LCMPackError
from lcm_lora_pack.lora.safe_write import ExportPathError
from test_distill_node import TINY
from test_distill_train import tiny_config, write_images

NODE = "LCMPack_DistillLCMLoRA"
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:3]


def _cli_args(tmp_path, *extra: str) -> list[str]:
    return ["--checkpoint", "unused.safetensors", "--prompts_file", str(tmp_path / "prompts.txt"), "--output", "x",
            "--loras_dir", str(tmp_path), "--comfyui_path", str(comfyui_root()), *extra]


@pytest.mark.parametrize(("option", "value"), [
    ("adam_epsilon", "inf"), ("adam_weight_decay", "inf"), ("huber_c", "inf"), ("lora_alpha", "inf"),
    ("timestep_scaling_factor", "inf"), ("teacher_guidance_scale", "inf"), ("w_max", "nan"),
    ("learning_rate", "nan"), ("max_grad_norm", "inf"), ("adam_weight_decay", "1e9"), ("adam_epsilon", "10"),
])
def test_cli_refuses_non_finite_or_huge_options_naming_them(tmp_path, caplog, option, value):
    caplog.set_level(logging.ERROR)
    assert cli.main(_cli_args(tmp_path, f"--{option}", value)) == 2
    assert f"{option}=" in caplog.text and "DistillConfigError" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_config_names_a_string_given_for_a_number():
    with pytest.raises(DistillConfigError, match="learning_rate='abc' is not a number"):
        DistillConfig(learning_rate="abc").resolved("sd1.x")
    assert issubclass(DistillConfigError, LCMPackError)


def test_no_checkpoint_is_written_from_non_finite_parameters(comfy, sd15, tmp_path, monkeypatch):
    model, clip, _ = sd15
    original = Trainer.train_step

    def poisoned(self):
        value = original(self)
        with torch.no_grad():
            next(self.lora.parameters()).fill_(float("nan"))
        return value
    monkeypatch.setattr(Trainer, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(DistillLossError, match="NaN/Inf at step 1"):
        distill_lcm_lora(model, clip, load_samples(prompts=["a cube"]), tiny_config(checkpointing_steps=1,
                         teacher_sampling_steps=1), tmp_path, "poisoned", checkpoint_dir=run)
    assert not list(run.glob("checkpoint-*.pt"))
    assert not (tmp_path / "poisoned.safetensors").exists()


class _SpyClip:
    """The CLIP, recording the length of every text it is asked to tokenize."""

    def __init__(self, clip):
        self._clip, self.lengths = clip, []

    def tokenize(self, text, *args, **kwargs):
        self.lengths.append(len(text))
        return self._clip.tokenize(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._clip, name)


def test_long_prompts_are_cut_before_encoding_and_encode_the_same(comfy, sd15, tmp_path):
    from lcm_lora_pack.distill.comfy_bridge import encode_texts

    model, clip, _ = sd15
    long_prompt = "a red cube on a table, " * 13_000  # 300 KB
    spy = _SpyClip(clip)
    distill_lcm_lora(model, spy, load_samples(prompts=[long_prompt]), tiny_config(max_train_steps=1,
                     teacher_sampling_steps=1), tmp_path, "long_prompt", checkpoint_dir=tmp_path / "run")
    assert spy.lengths and max(spy.lengths) <= MAX_PROMPT_CHARS
    # The 77 tokens the trainer uses are those of the whole text.
    whole, _ = encode_texts(clip, ["a red cube on a table, " * 40], sdxl=False)
    cut, _ = encode_texts(clip, [bounded_text("a red cube on a table, " * 40)], sdxl=False)
    assert torch.equal(whole, cut)


def test_huge_caption_and_prompts_files_are_refused_naming_the_file(tmp_path):
    data = write_images(tmp_path / "data", count=2)
    (data / "image_1.txt").write_text("x" * (MAX_CAPTION_FILE_BYTES + 1))
    with pytest.raises(DistillDataError, match=r"image_1\.txt is larger than 64 KiB"):
        load_samples(data_dir=data)
    prompts = tmp_path / "prompts.txt"
    with prompts.open("w") as handle:
        handle.write(("a prompt\n" * 1024) * 2000)  # 18 MB
    with pytest.raises(DistillDataError, match=r"prompts.txt is larger than 16384 KiB"):
        load_samples(prompts_file=prompts)


@pytest.fixture
def tiny_bomb_limit(monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 72×88 test images are > 2× over it


def test_decompression_bomb_is_named_by_the_node(comfy, sd15, tiny_bomb_limit):
    model, clip, vae = sd15
    write_images(comfy.base / "input" / "bombs", count=1)
    with pytest.raises(Exception) as caught:
        comfy.run_node(NODE, model=model, clip=clip, vae=vae, output_name="bomb", data_dir="bombs", prompts="",
                       **TINY)
    assert type(caught.value).__name__ == "DistillDataError"
    assert "bombs/image_0.png has more pixels than the safety limit" in str(caught.value)
    assert str(comfy.base) not in str(caught.value)


def test_decompression_bomb_cli_message_without_traceback(model_store, tmp_path, caplog, tiny_bomb_limit):
    caplog.set_level(logging.INFO)
    data = write_images(tmp_path / "data", count=1)
    code = cli.main(["--checkpoint", str(model_store / "checkpoints" / SD15_CKPT), "--data_dir", str(data),
                     "--output", "bomb", "--loras_dir", str(tmp_path), "--output_dir", str(tmp_path / "run"),
                     "--comfyui_path", str(comfyui_root()), "--resolution", "64", "--max_train_steps", "1",
                     "--train_batch_size", "1", "--lora_rank", "4", "--mixed_precision", "no"])
    assert code == 2
    assert "image_0.png has more pixels than the safety limit" in caplog.text
    assert "Traceback" not in caplog.text


def _first_checkpoint(model, clip, tmp_path):
    samples = load_samples(prompts=["a cube"])
    run = tmp_path / "run"
    config = tiny_config(max_train_steps=1, checkpointing_steps=1, teacher_sampling_steps=1)
    distill_lcm_lora(model, clip, samples, config, tmp_path, "first", checkpoint_dir=run)
    return samples, config, run / "checkpoint-1.pt"


def test_damaged_wrong_shape_or_incomplete_checkpoints_get_typed_errors(comfy, sd15, tmp_path):
    model, clip, _ = sd15
    samples, config, good = _first_checkpoint(model, clip, tmp_path)
    state = torch.load(good, weights_only=True)
    incomplete = dict(state)
    del incomplete["optimizer"]
    wrong_shape = dict(state, lora={k: torch.zeros(3) for k in state["lora"]})
    garbage = good.parent / "checkpoint-7.pt"
    garbage.write_bytes(b"PK\x03\x04 not a checkpoint")
    cases = {"incomplete": (incomplete, "incomplete"), "wrong_shape": (wrong_shape, "does not fit this run")}
    for name, (payload, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(DistillCheckpointError, match=message) as caught:
            distill_lcm_lora(model, clip, samples, config, tmp_path, name, checkpoint_dir=tmp_path / "run",
                             resume_from_checkpoint=str(path))
        assert not ANSI.search(str(caught.value)) and "weights_only" not in str(caught.value)
    with pytest.raises(DistillCheckpointError, match="cannot be read") as caught:
        distill_lcm_lora(model, clip, samples, config, tmp_path, "garbage", checkpoint_dir=tmp_path / "run",
                         resume_from_checkpoint=str(garbage))
    assert not ANSI.search(str(caught.value)) and "weights_only" not in str(caught.value)


def test_a_damaged_latent_cache_is_rebuilt(comfy, sd15, tmp_path):
    from safetensors.torch import load_file

    model, clip, vae = sd15
    samples = load_samples(data_dir=write_images(tmp_path / "data", count=2))
    config = tiny_config(max_train_steps=1)
    distill_lcm_lora(model, clip, samples, config, tmp_path, "cached", vae=vae, cache_dir=tmp_path / "cache")
    (cache,) = (tmp_path / "cache").glob("*.safetensors")
    cache.write_bytes(cache.read_bytes()[:100])
    distill_lcm_lora(model, clip, samples, config, tmp_path, "cached_again", vae=vae, cache_dir=tmp_path / "cache")
    assert set(load_file(str(cache))) == {"latents", "context", "uncond_context"}
    assert (tmp_path / "cached_again.safetensors").is_file()


def test_the_latent_cache_key_ignores_the_clip_layer_comfyui_leaves_uninitialised(comfy, sd15, tmp_path):
    """SD1.5 checkpoints carry no ``text_projection``; ComfyUI leaves that layer of its CLIP as uninitialised
    memory, different at every load. The cache key must not read it, or a second run never finds its cache."""
    from lcm_lora_pack.distill.dataset import cache_key

    _, clip, vae = sd15
    samples = load_samples(data_dir=write_images(tmp_path / "data", count=2))
    config = tiny_config(max_train_steps=1)
    (projection,) = [p for name, p in clip.cond_stage_model.named_parameters() if name.endswith("text_projection.weight")]
    before, kept = cache_key(samples, config, "sd15", clip, vae), projection.detach().clone()
    try:
        with torch.no_grad():
            projection.copy_(torch.randn(projection.shape, generator=torch.Generator().manual_seed(3)))
        assert cache_key(samples, config, "sd15", clip, vae) == before
    finally:
        with torch.no_grad():
            projection.copy_(kept)


def test_read_only_lora_folder_and_a_folder_in_the_way_are_found_before_training(comfy, sd15, tmp_path):
    model, clip, _ = sd15
    samples = load_samples(prompts=["a cube"])
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "in_the_way.safetensors").mkdir()
    with pytest.raises(ExportPathError, match="is a folder"):
        distill_lcm_lora(model, clip, samples, tiny_config(), loras, "in_the_way", overwrite=True,
                         checkpoint_dir=tmp_path / "run")
    loras.chmod(0o555)
    try:
        with pytest.raises(ExportPathError, match="read-only"):
            distill_lcm_lora(model, clip, samples, tiny_config(), loras, "read_only",
                             checkpoint_dir=tmp_path / "run")
    finally:
        loras.chmod(0o755)
    assert not (tmp_path / "run").exists()  # refused before the first step


def test_unknown_target_modules_and_a_wrong_clip_are_named(comfy, sd15, tmp_path):
    model, clip, _ = sd15
    samples = load_samples(prompts=["a cube"])
    with pytest.raises(DistillConfigError, match=r"\['bogus_module'\] match no Linear/Conv2d module"):
        distill_lcm_lora(model, clip, samples, tiny_config(lora_target_modules=("to_q", "bogus_module")), tmp_path,
                         "targets", checkpoint_dir=tmp_path / "run")
    vega = comfy.run_node("UNETLoader", unet_name=VEGA_UNET, weight_dtype="default")[0]
    with pytest.raises(DistillModelError, match="768-wide text embeddings but this vega model reads 2048"):
        distill_lcm_lora(vega, clip, samples, tiny_config(), tmp_path, "wrong_clip", checkpoint_dir=tmp_path / "run")
    assert not list(tmp_path.glob("*.safetensors"))


def test_cli_checks_output_dir_and_summary_json_before_training(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert cli.main(_cli_args(tmp_path, "--output_dir", str(a_file))) == 2
    assert "--output_dir" in caplog.text and "is a file" in caplog.text
    assert cli.main(_cli_args(tmp_path, "--summary_json", str(tmp_path / "missing" / "s.json"))) == 2
    assert "--summary_json" in caplog.text and "does not exist" in caplog.text
    assert "Traceback" not in caplog.text


def _sample(comfy, model, clip) -> torch.Tensor:
    (positive,) = comfy.run_node("CLIPTextEncode", clip=clip, text="a red cube")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfy.run_node("KSampler", model=model, seed=1, steps=2, cfg=2.0, sampler_name="euler",
                          scheduler="simple", positive=positive, negative=positive, latent_image=latent,
                          denoise=1.0)[0]["samples"]


def _leftovers(unet) -> list[str]:
    """Forward hooks and per-instance forward overrides left on the UNet's modules."""
    return [name for name, module in unet.named_modules()
            if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__]


def _trainer_functions(unet) -> list[str]:
    """Modules of the UNet that carry one of the trainer's ComfyUI weight functions."""
    from lcm_lora_pack.distill.lora_layers import LoraWeight, frozen_weight

    return [name for name, module in unet.named_modules()
            for f in [*getattr(module, "weight_function", []), *getattr(module, "bias_function", [])]
            if isinstance(f, LoraWeight) or f is frozen_weight]


def _patcher_state(patcher) -> tuple:
    return (patcher.patches_uuid, {k: list(v) for k, v in patcher.weight_wrapper_patches.items()},
            {k: list(v) for k, v in patcher.patches.items()}, dict(patcher.object_patches), repr(patcher.model_options))


def test_the_users_model_is_untouched_while_a_run_is_in_progress(comfy, sd15, tmp_path):
    """Between steps (from the interrupt callback, where ComfyUI's other work would run) the user's patcher and
    its UNet's modules carry nothing of the trainer, and the user's model samples what it sampled before; that
    sampling does not change the run either (the trainer reloads its clone: same LoRA as an unprobed run)."""
    model, clip, _ = sd15
    unet = model.model.diffusion_model
    private = "force_deepcopy" in inspect.signature(model.clone).parameters  # 0.33: core's private training copy
    before, baseline, state = _sample(comfy, model, clip), _leftovers(unet), _patcher_state(model)
    samples = load_samples(prompts=["a cube"])
    config = tiny_config(max_train_steps=3, gradient_checkpointing=True, teacher_sampling_steps=1)
    probes = []

    def probe():
        probes.append(len(probes))
        assert _patcher_state(model) == state
        assert _leftovers(unet) == baseline
        if private:
            assert not _trainer_functions(unet)
        assert torch.equal(_sample(comfy, model, clip), before)
        assert torch.equal(_sample(comfy, model.clone(), clip), before)
        assert not _trainer_functions(unet)  # loading the user's model took a shared clone's functions off
    probed = distill_lcm_lora(model, clip, samples, config, tmp_path, "probed", interrupt=probe)
    plain = distill_lcm_lora(model, clip, samples, config, tmp_path, "plain")
    assert probes == [0, 1, 2]
    trained = probed.lora.state_dict()
    assert any(k.endswith("lora_up.weight") and v.abs().sum() > 0 for k, v in trained.items())
    for key, value in plain.lora.state_dict().items():
        assert torch.equal(trained[key], value), key
    assert torch.equal(_sample(comfy, model, clip), before)


def test_the_users_model_is_unchanged_after_a_failed_and_an_interrupted_run(comfy, sd15, tmp_path, monkeypatch):
    import comfy.model_management as mm
    from lcm_lora_pack.distill.lora_layers import LoraWeight

    model, clip, _ = sd15
    unet = model.model.diffusion_model
    before, baseline, state = _sample(comfy, model, clip), _leftovers(unet), _patcher_state(model)
    samples = load_samples(prompts=["a cube"])
    config = tiny_config(max_train_steps=3, gradient_checkpointing=True, teacher_sampling_steps=1)

    def unchanged():
        assert _patcher_state(model) == state
        assert _leftovers(unet) == baseline
        assert torch.equal(_sample(comfy, model, clip), before)
        assert torch.equal(_sample(comfy, model.clone(), clip), before)
        assert not _trainer_functions(unet)

    calls = {"n": 0}

    def interrupt_after_one_step():
        calls["n"] += 1
        if calls["n"] == 2:  # mid-run: one step trained, the LoRA's functions on the loaded training clone
            raise mm.InterruptProcessingException()
    with pytest.raises(mm.InterruptProcessingException):
        distill_lcm_lora(model, clip, samples, config, tmp_path, "interrupted", checkpoint_dir=tmp_path / "a",
                         interrupt=interrupt_after_one_step)
    unchanged()

    original_call, seen = LoraWeight.__call__, {"n": 0}

    def fails_mid_step(self, weight):
        # one call per target and UNet forward; a step runs ≥ 4 (student, teacher, target, the checkpointed
        # student again in backward): this one is in the second step, inside a block
        seen["n"] += 1
        if seen["n"] == 4 * len(self.lora_set.adapters) + len(self.lora_set.adapters) // 2:
            raise RuntimeError("simulated failure inside the UNet's forward")
        return original_call(self, weight)
    monkeypatch.setattr(LoraWeight, "__call__", fails_mid_step)
    with pytest.raises(RuntimeError, match="simulated failure"):
        distill_lcm_lora(model, clip, samples, config, tmp_path, "failed", checkpoint_dir=tmp_path / "b")
    unchanged()
    assert not list(tmp_path.glob("*.safetensors"))
