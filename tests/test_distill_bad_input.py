"""Bad input gets a typed error that names the problem, before any file is written (CPU, real ComfyUI)."""
from __future__ import annotations

import pytest
from conftest import SD15_CKPT
from lcm_lora_pack.distill.api import distill_lcm_lora, load_samples
from lcm_lora_pack.distill.config import DistillConfig
from lcm_lora_pack.distill.errors import DistillConfigError, DistillDataError, DistillModelError
from lcm_lora_pack.lora.safe_write import ExportPathError
from test_distill_train import tiny_config, write_images


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:3]


def test_empty_or_missing_data_folder(tmp_path):
    with pytest.raises(DistillDataError, match="no images"):
        load_samples(data_dir=tmp_path)
    with pytest.raises(DistillDataError, match="does not exist"):
        load_samples(data_dir=tmp_path / "nowhere")
    empty = tmp_path / "prompts.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(DistillDataError, match="no prompts"):
        load_samples(prompts_file=empty)


def test_images_without_captions_are_named(tmp_path):
    write_images(tmp_path, count=3)
    (tmp_path / "image_1.txt").unlink()
    (tmp_path / "image_2.txt").unlink()
    with pytest.raises(DistillDataError, match=r"2 image\(s\).*image_1\.png, image_2\.png"):
        load_samples(data_dir=tmp_path)


@pytest.mark.parametrize(("field", "value"), [("lora_rank", 0), ("num_ddim_timesteps", 7), ("w_min", 20.0),
                                              ("learning_rate", 5.0), ("loss_type", "l1"), ("resolution", 100),
                                              ("mixed_precision", "fp8")])
def test_out_of_range_hyper_parameters(field, value):
    with pytest.raises(DistillConfigError, match=field):
        DistillConfig(**{field: value}).resolved("sd1.x")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_unreadable_image_and_nothing_written(comfy, sd15, tmp_path):
    model, clip, vae = sd15
    data = write_images(tmp_path / "data", count=2)
    (data / "image_1.png").write_bytes(b"not a png")
    loras = comfy.base / "models" / "loras"
    before = _files(loras)
    with pytest.raises(DistillDataError, match="image_1.png cannot be read"):
        distill_lcm_lora(model, clip, load_samples(data_dir=data), tiny_config(), loras, "bad_image", vae=vae,
                         checkpoint_dir=tmp_path / "run")
    assert _files(loras) == before


def test_output_name_that_exists_or_escapes(comfy, sd15, tmp_path):
    model, clip, vae = sd15
    loras = comfy.base / "models" / "loras"
    (loras / "taken.safetensors").write_bytes(b"x")
    samples = load_samples(prompts=["a cube"])
    for name, message in (("taken", "already exists"), ("../escape", "path separator"), ("", "empty")):
        with pytest.raises(ExportPathError, match=message):
            distill_lcm_lora(model, clip, samples, tiny_config(), loras, name, vae=vae, checkpoint_dir=tmp_path)
    assert (loras / "taken.safetensors").read_bytes() == b"x"
    assert not list(tmp_path.iterdir())


def test_unsupported_models(comfy, sd15, tmp_path):
    model, clip, vae = sd15
    samples = load_samples(prompts=["a cube"])
    loras = comfy.base / "models" / "loras"
    with pytest.raises(DistillModelError, match="not a ComfyUI diffusion model"):
        distill_lcm_lora(clip, clip, samples, tiny_config(), loras, "x", checkpoint_dir=tmp_path)
    x0 = comfy.run_node("ModelSamplingDiscrete", model=model, sampling="x0", zsnr=False)[0]
    with pytest.raises(DistillModelError, match="eps- or v-prediction"):
        distill_lcm_lora(x0, clip, samples, tiny_config(), loras, "x", checkpoint_dir=tmp_path)
    with pytest.raises(DistillConfigError, match="VAE"):
        distill_lcm_lora(model, clip, load_samples(data_dir=write_images(tmp_path / "d", 1)), tiny_config(), loras,
                         "x", checkpoint_dir=tmp_path / "run")
