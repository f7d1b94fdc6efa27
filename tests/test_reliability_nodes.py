"""Reliability of the pack's nodes in real ComfyUI (issue 18): exports run on every queue, every float input is
finite and in range at validation, combo values are checked at validation, non-finite results are typed errors
naming their cause, and the messages say what can be done."""
from __future__ import annotations

import copy
import math
import uuid

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.devkit import loras
from lcm_lora_pack.devkit.host import EXECUTOR_CACHE_ARGS, PromptFailed, ServerStub
from lcm_lora_pack.devkit.models import SD15_UNET_CONFIG
from lcm_lora_pack.lora.errors import LoraTensorError
from lcm_lora_pack.lora.safe_write import atomic_save_safetensors

LCM = "rel-lcm.safetensors"
HUGE = "rel-alpha-1e30.safetensors"
NAN = float("nan")


@pytest.fixture(scope="module")
def lora_files(comfy):
    folder = comfy.base / "models" / "loras"
    loras.make_kohya_lora(SD15_UNET_CONFIG, folder / LCM, rank=4, alpha=4.0, seed=21, kind="lcm")
    loras.make_kohya_lora(SD15_UNET_CONFIG, folder / HUGE, rank=4, alpha=1e30, seed=22)
    return folder


def _base():
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD15_CKPT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }


def _sample_graph(model=("ckpt", 0), **inputs):
    graph = _base()
    graph["sample"] = {"class_type": "LCMPack_KSamplerLCM", "inputs": {
        "model": list(model), "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
        "seed": 1, "steps": 2, "cfg": 1.0, "sampler": "lcm", "gamma": 0.3, "denoise": 1.0, **inputs}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "rel"}}
    return graph


def _graphs():
    """(graph builder, node to check) per pack node, each graph valid as built."""
    def loader(**inputs):
        graph = _sample_graph(model=("lora", 0))
        graph["lora"] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
            "model": ["ckpt", 0], "lora_name": LCM, "strength": 1.0, "allow_partial": False, **inputs}}
        return graph

    def patch(**inputs):
        graph = _sample_graph(model=("patch", 0))
        graph["patch"] = {"class_type": "LCMPack_ModelSamplingLCM", "inputs": {
            "model": ["ckpt", 0], "original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5,
            **inputs}}
        return graph

    def custom(node, **inputs):
        graph = _base()
        graph["sampler"] = {"class_type": "LCMPack_LCMSampler", "inputs": {"sampler": "lcm", "gamma": 0.3}}
        graph["sigmas"] = {"class_type": "LCMPack_LCMScheduler", "inputs": {
            "model": ["ckpt", 0], "steps": 2, "denoise": 1.0, "original_inference_steps": 0}}
        graph[node]["inputs"].update(inputs)
        graph["custom"] = {"class_type": "SamplerCustom", "inputs": {
            "model": ["ckpt", 0], "add_noise": True, "noise_seed": 1, "cfg": 1.0, "positive": ["pos", 0],
            "negative": ["neg", 0], "sampler": ["sampler", 0], "sigmas": ["sigmas", 0], "latent_image": ["empty", 0]}}
        graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["custom", 0], "filename_prefix": "x"}}
        return graph

    def stack(**inputs):
        graph = _base()
        graph["stack"] = {"class_type": "LCMPack_LoraStack", "inputs": {
            "lora_name": LCM, "weight": 1.0, "role": "accelerator", **inputs}}
        return graph

    def mixer(**inputs):
        graph = stack()
        graph["mix"] = {"class_type": "LCMPack_LoraMixer", "inputs": {
            "model": ["ckpt", 0], "stack": ["stack", 0], "style_normalization": "none", "allow_partial": False,
            "style_budget": 1.0, **inputs}}
        graph.update({k: v for k, v in _sample_graph(model=("mix", 0)).items() if k in ("sample", "save")})
        return graph

    def export(**inputs):
        graph = stack()
        graph["export"] = {"class_type": "LCMPack_LoraExport", "inputs": {
            "model": ["ckpt", 0], "stack": ["stack", 0], "filename": "rel-never-written", "mode": "concat",
            "rank": 4, "overwrite": False, "style_normalization": "none", "style_budget": 1.0, "save_dtype": "fp16",
            **inputs}}
        return graph

    def distill(**inputs):
        graph = _base()
        graph["distill"] = {"class_type": "LCMPack_DistillLCMLoRA", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "output_name": "rel-never-trained", "data_dir": "",
            "prompts": "a cat", "max_train_steps": 1, "train_batch_size": 1, "learning_rate": 1e-4, "lora_rank": 4,
            "lora_alpha": 4.0, "resolution": 64, "w_min": 3.0, "w_max": 15.0, "num_ddim_timesteps": 50,
            "loss_type": "huber", "huber_c": 0.001, "mixed_precision": "no", "gradient_checkpointing": False,
            "seed": 0, "checkpointing_steps": 500, "resume": False, "center_crop": False, "random_flip": False,
            **inputs}}
        return graph

    stack_to_export = export  # the stack is checked in a graph whose output is the export
    return {"LCMPack_LCMLoraLoader": (loader, "lora"), "LCMPack_ModelSamplingLCM": (patch, "patch"),
            "LCMPack_KSamplerLCM": (_sample_graph, "sample"),
            "LCMPack_LCMSampler": (lambda **i: custom("sampler", **i), "sampler"),
            "LCMPack_LCMScheduler": (lambda **i: custom("sigmas", **i), "sigmas"),
            "LCMPack_LoraStack": (lambda **i: _restack(stack_to_export(), **i), "stack"),
            "LCMPack_LoraMixer": (mixer, "mix"), "LCMPack_LoraExport": (export, "export"),
            "LCMPack_DistillLCMLoRA": (distill, "distill")}


def _restack(graph, **inputs):
    graph["stack"]["inputs"].update(inputs)
    return graph


GRAPHS = _graphs()


def _errors(comfy, graph, node) -> str:
    ok, error, outputs, node_errors = comfy.validate(graph)
    assert node in node_errors, (error, node_errors)
    return " | ".join(e.get("details", "") + " " + e.get("message", "") for e in node_errors[node]["errors"])


def _float_inputs(comfy):
    """Every FLOAT input of every pack node, from the registered nodes themselves (none can be missed)."""
    found = []
    for node_id in comfy.pack_node_ids():
        info = comfy.node_class(node_id).INPUT_TYPES()
        for group in ("required", "optional"):
            found += [(node_id, name) for name, spec in info.get(group, {}).items() if spec[0] == "FLOAT"]
    return found


def test_every_float_input_of_every_pack_node_is_covered(comfy):
    assert {node for node, _ in _float_inputs(comfy)} <= set(GRAPHS)
    assert len(_float_inputs(comfy)) >= 10


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_inputs_fail_validation_naming_input_and_value(comfy, lora_files, bad):
    for node_id, name in _float_inputs(comfy):
        build, node = GRAPHS[node_id]
        ok, _, _, node_errors = comfy.validate(build())
        assert ok and not node_errors, (node_id, node_errors)
        details = _errors(comfy, build(**{name: bad}), node)
        assert f"{name}={bad}" in details, (node_id, name, details)


@pytest.mark.parametrize(("node_id", "name", "value", "expected"), [
    ("LCMPack_KSamplerLCM", "steps", 10000, "steps=10000 is above its maximum 1000"),
    ("LCMPack_KSamplerLCM", "cfg", 101.0, "cfg=101.0 is above its maximum 100.0"),
    ("LCMPack_KSamplerLCM", "denoise", 1.5, "denoise=1.5 must be in (0, 1]"),
    ("LCMPack_LCMScheduler", "steps", 5000, "steps=5000 is above its maximum 1000"),
    ("LCMPack_LCMLoraLoader", "strength", 11.0, "strength=11.0 is above its maximum 10.0"),
    ("LCMPack_LoraExport", "rank", 5000, "rank=5000 is above its maximum 4096"),
    ("LCMPack_ModelSamplingLCM", "sigma_data", 0.0, "sigma_data=0.0 is below its minimum 0.001"),
])
def test_named_inputs_keep_their_range_checks(comfy, lora_files, node_id, name, value, expected):
    build, node = GRAPHS[node_id]
    assert expected in _errors(comfy, build(**{name: value}), node)


@pytest.mark.parametrize(("node_id", "name"), [
    ("LCMPack_KSamplerLCM", "sampler"), ("LCMPack_LCMSampler", "sampler"), ("LCMPack_LoraStack", "role"),
    ("LCMPack_LoraMixer", "style_normalization"), ("LCMPack_LoraExport", "style_normalization"),
    ("LCMPack_LoraExport", "save_dtype"), ("LCMPack_LoraExport", "mode"),
])
def test_unknown_combo_values_fail_validation(comfy, lora_files, node_id, name):
    build, node = GRAPHS[node_id]
    assert f"{name}='bogus' is not one of" in _errors(comfy, build(**{name: "bogus"}), node)


def test_one_message_names_the_failing_value_only(comfy, lora_files):
    details = _errors(comfy, _sample_graph(steps=10000), "sample")
    assert "steps=10000" in details and "denoise=" not in details and "gamma=" not in details


def test_too_many_steps_says_what_can_be_done(comfy, sd15, lora_files):
    build, node = GRAPHS["LCMPack_LCMScheduler"]
    details = _errors(comfy, build(steps=60, original_inference_steps=50), node)
    assert "lower steps to ≤ 50" in details and "original_inference_steps ≥ 60" in details
    assert "raise denoise" not in details
    model = sd15[0]
    with pytest.raises(ValueError) as caught:
        comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=[], negative=[],
                       latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=0, steps=100, cfg=1.0, sampler="lcm",
                       gamma=0.3, denoise=1.0)
    assert "lower steps to ≤ 50" in str(caught.value) and "raise denoise" not in str(caught.value)


def test_over_long_export_name_says_the_limit(comfy, lora_files):
    build, node = GRAPHS["LCMPack_LoraExport"]
    details = _errors(comfy, build(filename="n" * 250), node)
    assert "limited to 255 bytes" in details and "n" * 100 not in details
    ok, _, _, node_errors = comfy.validate(build(filename="n" * (255 - len(".safetensors"))))
    assert ok and not node_errors


def _fail_message(call) -> tuple[str, str]:
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value).__name__, str(caught.value)


def test_lora_with_alpha_1e30_is_a_typed_sampling_error_naming_it(comfy, lora_files):
    graph = _sample_graph(model=("lora", 0))
    graph["lora"] = {"class_type": "LCMPack_LCMLoraLoader", "inputs": {
        "model": ["ckpt", 0], "lora_name": HUGE, "strength": 1.0, "allow_partial": False}}
    with pytest.raises(PromptFailed) as caught:
        comfy.run_prompt(graph)
    payload = caught.value.payload
    assert payload["exception_type"].endswith("NonFiniteSamplingError"), payload
    message = payload["exception_message"]
    assert "NaN/Inf at step 1 of 2" in message and f"the LoRA '{HUGE}' has alpha 1e+30 at rank 4" in message


@pytest.mark.parametrize(("inputs", "cause"), [
    ({"sigma_data": NAN}, "sigma_data"), ({"timestep_scaling": NAN}, "timestep_scaling")])
def test_non_finite_model_sampling_constant_behind_validation_is_named(comfy, sd15, inputs, cause):
    """A constant that reached execution (e.g. through a link) is named by the sampling error."""
    model, cond = sd15
    constants = {"original_inference_steps": 50, "timestep_scaling": 10.0, "sigma_data": 0.5, **inputs}
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=model, **constants)
    name, message = _fail_message(lambda: comfy.run_node(
        "LCMPack_KSamplerLCM", model=patched, positive=cond, negative=None,
        latent_image={"samples": torch.zeros(1, 4, 8, 8)}, seed=0, steps=2, cfg=1.0, sampler="lcm", gamma=0.3,
        denoise=1.0))
    assert name == "NonFiniteSamplingError" and cause in message and "step 1 of 2" in message, message


def test_non_finite_loader_strength_behind_validation_is_named(comfy, sd15, lora_files):
    """Past validation (a direct call), the one apply path still refuses a NaN strength before patching."""
    model, _ = sd15
    name, message = _fail_message(lambda: comfy.run_node(
        "LCMPack_LCMLoraLoader", model=model, lora_name=LCM, strength=NAN, allow_partial=False))
    assert name == "MixError" and f"'{LCM}'" in message and "not a finite number" in message, message


@pytest.fixture(scope="module")
def sd15(comfy):
    """The SD1.5-family model and a positive conditioning."""
    model, clip = comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[:2]
    return model, comfy.run_node("CLIPTextEncode", clip=clip, text="a cat")[0]


def test_export_refuses_to_write_non_finite_tensors(tmp_path):
    with pytest.raises(LoraTensorError, match="NaN/Inf"):
        atomic_save_safetensors({"a.lora_up.weight": torch.tensor([1.0, math.inf])}, {}, tmp_path, "bad")
    assert list(tmp_path.iterdir()) == []


def _queue(comfy, executor, stub, prompt) -> list:
    """Queue ``prompt`` (a fresh copy, as the server receives it) on a long-lived executor; execution errors."""
    prompt = copy.deepcopy(prompt)
    ok, error, outputs, node_errors = comfy.validate(prompt)
    assert ok and not node_errors, (error, node_errors)
    stub.messages.clear()
    executor.execute(prompt, str(uuid.uuid4()), {"client_id": "harness"}, outputs)
    return [data for event, data in stub.messages if event == "execution_error"]


def test_a_requeued_export_runs_again_through_the_cached_executor(comfy, lora_files):
    """One PromptExecutor with ComfyUI's classic cache, as the server keeps it: queue, delete, queue again."""
    build, _ = GRAPHS["LCMPack_LoraExport"]
    prompt = build(filename="rel-requeued")
    path = lora_files / "rel-requeued.safetensors"
    stub = ServerStub()
    executor = comfy.execution.PromptExecutor(stub, cache_type=comfy.execution.CacheType.CLASSIC,
                                              cache_args=dict(EXECUTOR_CACHE_ARGS))
    assert _queue(comfy, executor, stub, prompt) == [] and path.is_file()
    path.unlink()
    assert _queue(comfy, executor, stub, prompt) == [] and path.is_file()
    errors = _queue(comfy, executor, stub, prompt)  # the file exists and overwrite is False
    assert len(errors) == 1 and "already exists" in errors[0]["exception_message"], errors
    path.unlink()
