"""Core batches the conditioning on every model the pack hands on (issue 29), and the fast path's test of a step.

Proven on the real host with the generated SD1.5-family checkpoint: the pack's LCM model sampling adds no
calc-cond-batch function (only the model-sampling object changes), another node's function is kept and called;
``comfy_cond_batch.plain_batch`` (the opt-in fast path's admission test) accepts one plain conditioning per
prompt -- the positive at cfg 1, uncond then cond (core's batch order) at cfg > 1 -- and refuses every case core
treats specially.
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch
from conftest import SD15_CKPT

LATENT = torch.zeros(1, 4, 8, 8)
SEED = 5


@pytest.fixture(scope="module")
def sd15(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]


@pytest.fixture(scope="module", autouse=True)
def core(comfy):
    """ComfyUI's modules (importable once the host has booted) and the pack's module under test."""
    names = ["comfy.model_management", "comfy.patcher_extension", "comfy.sample", "comfy.samplers"]
    modules = {name.split(".")[-1]: importlib.import_module(name) for name in names}
    globals()["comfy_cond_batch"] = importlib.import_module("lcm_lora_pack.host.comfy_cond_batch")
    globals()["cm"] = SimpleNamespace(**modules)
    return cm


def _cond(seed: int, **extra):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(1, 77, 768, generator=generator), dict(extra)]]


cm = comfy_cond_batch = None  # set by the ``core`` fixture


def _classifying_model(model_patcher, report: dict):
    """A clone whose calc-cond-batch hook records the fast path's verdict on each step, then runs core's batching."""
    clone = model_patcher.clone()

    def classify(args):
        entries = comfy_cond_batch.plain_batch(args["conds"], args["model_options"], control=True)
        report.setdefault("direct", []).append(entries is not None)
        report.setdefault("order", []).append(None if entries is None else [index for index, _ in entries])
        return _core_batch(args)

    clone.set_model_sampler_calc_cond_batch_function(classify)
    return clone


def _sample(model, positive, negative, cfg):
    sampler = cm.samplers.KSAMPLER(cm.samplers.k_diffusion_sampling.sample_euler)
    sigmas = torch.tensor([14.6, 3.0, 0.0])
    noise = cm.sample.prepare_noise(LATENT, SEED)
    return cm.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, LATENT, seed=SEED)


@pytest.mark.parametrize(("cfg", "order"), [(1.0, [0]), (2.0, [1, 0])])
def test_a_plain_prompt_is_admitted_in_cores_batch_order(sd15, cfg, order):
    """cfg 1: the positive alone (core skips the uncond); cfg 2: uncond first, then cond, as core batches them."""
    report = {}
    _sample(_classifying_model(sd15, report), _cond(1), _cond(2), cfg=cfg)
    assert report["direct"] == [True, True], f"a plain prompt at cfg {cfg} must be admitted by the fast path"
    assert report["order"] == [order, order]


@pytest.mark.parametrize("case", ["area", "strength", "two entries", "timestep range", "mask", "function wrapper",
                                  "negative with an area"])
def test_every_other_case_goes_to_core(comfy, sd15, case):
    positive, negative, cfg, model = _cond(1), _cond(2), 1.0, sd15
    if case == "negative with an area":
        (negative,) = comfy.run_node("ConditioningSetArea", conditioning=negative, width=32, height=32, x=0, y=0,
                                     strength=1.0)
        cfg = 2.0
    elif case == "area":
        (positive,) = comfy.run_node("ConditioningSetArea", conditioning=positive, width=32, height=32, x=0, y=0,
                                     strength=1.0)
    elif case == "strength":
        positive = _cond(1, strength=0.5)
    elif case == "two entries":
        (positive,) = comfy.run_node("ConditioningCombine", conditioning_1=_cond(1), conditioning_2=_cond(3))
    elif case == "timestep range":
        (positive,) = comfy.run_node("ConditioningSetTimestepRange", conditioning=_cond(1), start=0.0, end=0.5)
    elif case == "mask":
        (positive,) = comfy.run_node("ConditioningSetMask", conditioning=_cond(1), mask=torch.ones(1, 64, 64),
                                     strength=1.0, set_cond_area="default")
    elif case == "function wrapper":
        model = sd15.clone()
        model.set_model_unet_function_wrapper(lambda apply, args: apply(args["input"], args["timestep"], **args["c"]))
    report = {}
    _sample(_classifying_model(model, report), positive, negative, cfg=cfg)
    assert report["direct"] and not any(report["direct"]), f"{case}: must be left to core"


def test_lcm_sampling_changes_only_the_model_sampling_object(comfy, sd15):
    """Issue 29: the pack hands core a model whose options differ from the input's only by the sampling object."""
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    assert "sampler_calc_cond_batch_function" not in patched.model_options
    assert set(patched.model_options) == set(sd15.model_options)
    assert set(patched.object_patches) - set(sd15.object_patches) == {"model_sampling"}


def test_another_nodes_calc_cond_batch_function_is_kept_and_called(comfy, sd15):
    calls = []

    def counting(args):
        calls.append(1)
        return _core_batch(args)

    custom = sd15.clone()
    custom.set_model_sampler_calc_cond_batch_function(counting)
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=custom, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    assert patched.model_options["sampler_calc_cond_batch_function"] is counting
    comfy.run_node("LCMPack_KSamplerLCM", model=patched, positive=_cond(1), negative=_cond(2),
                   latent_image={"samples": LATENT}, seed=SEED, steps=4, cfg=1.0, sampler="lcm", gamma=0.3,
                   denoise=1.0)
    assert len(calls) == 4, calls


def _core_batch(args):
    """Another node's calc-cond-batch function: plain core batching (the pack leaves it in place)."""
    return cm.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"],
                                          args["model_options"])


def test_lcm_sampling_tables_live_on_the_load_device(comfy, sd15):
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    sampling = patched.get_model_object("model_sampling")
    assert {buffer.device for buffer in sampling.buffers()} == {torch.device(patched.load_device)}


def test_the_lcm_grid_is_computed_once_per_sampling_object_and_arguments(comfy, sd15, monkeypatch):
    """A re-queued KSamplerLCM reuses its schedule (no device round trip per run); new arguments recompute it."""
    import sys

    (pack_sampling,) = [m for name, m in list(sys.modules.items())
                        if name.endswith(".host.comfy_model_sampling") and not name.startswith("lcm_lora_pack.")]
    computed = []
    real = pack_sampling.schedule_sigmas

    def counting(model_sampling, timesteps):
        computed.append(list(timesteps))
        return real(model_sampling, timesteps)

    monkeypatch.setattr(pack_sampling, "schedule_sigmas", counting)
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    sampling = patched.get_model_object("model_sampling")
    first = pack_sampling.lcm_schedule(sampling, 4)
    first[0] = -1.0  # a caller changing its copy must not change the kept schedule
    again = pack_sampling.lcm_schedule(sampling, 4)
    other = pack_sampling.lcm_schedule(sampling, 2)
    assert computed == [[999, 759, 499, 259], [999, 499]]
    assert torch.equal(again, real(sampling, [999, 759, 499, 259])) and len(other) == 3
