"""The Distill LCM-LoRA node inside real ComfyUI: registration, a prompts-only graph run, ComfyUI's interrupt."""
from __future__ import annotations

import pytest
from conftest import SD15_CKPT

NODE = "LCMPack_DistillLCMLoRA"
TINY = dict(max_train_steps=2, train_batch_size=2, learning_rate=1e-3, lora_rank=4, lora_alpha=4.0, resolution=64,
            w_min=-1.0, w_max=15.0, num_ddim_timesteps=50, loss_type="huber", huber_c=0.001, mixed_precision="no",
            gradient_checkpointing=False, seed=0, checkpointing_steps=1, resume=False, center_crop=False,
            random_flip=False, teacher_sampling_steps=2)


def test_node_is_registered_with_tooltips(comfy):
    assert NODE in comfy.pack_node_ids()
    schema = comfy.node_class(NODE).GET_SCHEMA()
    assert all(getattr(item, "tooltip", None) for item in schema.inputs)


def test_prompts_only_graph_writes_an_lcm_lora_and_shows_the_loss_curve(comfy):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "2": {"class_type": NODE, "inputs": {"model": ["1", 0], "clip": ["1", 1], "output_name": "node_lcm",
                                             "data_dir": "", "prompts": "a red cube\na blue sphere", **TINY}},
    }
    outputs = comfy.run_prompt(prompt)
    assert outputs["2"]["images"], outputs["2"]
    path = comfy.base / "models" / "loras" / "node_lcm.safetensors"
    assert path.is_file()
    from lcm_lora_pack.lora.detect import detect_kind
    from lcm_lora_pack.lora.io import read_lora_file

    assert detect_kind(read_lora_file(path))[0] == "lcm"
    checkpoints = sorted((comfy.base / "user" / "__lcmpack_distill" / "node_lcm").glob("checkpoint-*.pt"))
    assert [p.name for p in checkpoints] == ["checkpoint-1.pt", "checkpoint-2.pt"]


def test_comfy_interrupt_stops_and_writes_no_lora(comfy):
    import comfy.model_management as mm

    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            comfy.run_node(NODE, model=model, clip=clip, output_name="interrupted_node", data_dir="",
                           prompts="a cube", **TINY)
    finally:
        mm.interrupt_current_processing(False)
    assert not (comfy.base / "models" / "loras" / "interrupted_node.safetensors").exists()
