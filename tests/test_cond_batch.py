"""The single-conditioning path for ComfyUI's per-step conditioning batch (samplers/comfy_cond_batch.py).

Proven on the real host with the generated SD1.5-family checkpoint: the direct path returns exactly what core's
``cm.samplers.calc_cond_batch`` returns and hands the diffusion model the same ``transformer_options``; every
case it does not cover goes to core; the pack's LCM models carry it; it skips core's per-step free-memory query.
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
    globals()["comfy_cond_batch"] = importlib.import_module("lcm_lora_pack.samplers.comfy_cond_batch")
    globals()["cm"] = SimpleNamespace(**modules)
    return cm


def _cond(seed: int, **extra):
    generator = torch.Generator().manual_seed(seed)
    return [[0.5 * torch.randn(1, 77, 768, generator=generator), dict(extra)]]


cm = comfy_cond_batch = None  # set by the ``core`` fixture


def _recorded_options(model_patcher, seen: list):
    """Record the transformer_options every apply_model call receives (an APPLY_MODEL wrapper)."""
    def record(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
        seen.append(dict(transformer_options or {}))
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    model_patcher.add_wrapper_with_key(cm.patcher_extension.WrappersMP.APPLY_MODEL, "test-record", record)


def _comparing_model(model_patcher, report: dict):
    """A clone whose calc-cond-batch hook runs core and the pack's function on the same step and compares."""
    clone = model_patcher.clone()
    seen = []
    _recorded_options(clone, seen)

    def compare(args):
        core = cm.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"],
                                              args["model_options"])
        core_options = seen[:]
        seen.clear()
        pack = comfy_cond_batch.single_cond_batch(args)
        pack_options = seen[:]
        seen.clear()
        report.setdefault("direct", []).append(
            comfy_cond_batch.single_plain_cond(args["conds"], args["model_options"]) is not None)
        report.setdefault("equal", []).append(all(torch.equal(a, b) for a, b in zip(core, pack, strict=True)))
        report.setdefault("options", []).append((core_options, pack_options))
        return core

    clone.set_model_sampler_calc_cond_batch_function(compare)
    return clone


def _sample(model, positive, negative, cfg):
    sampler = cm.samplers.KSAMPLER(cm.samplers.k_diffusion_sampling.sample_euler)
    sigmas = torch.tensor([14.6, 3.0, 0.0])
    noise = cm.sample.prepare_noise(LATENT, SEED)
    return cm.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, LATENT, seed=SEED)


def _same_options(core: dict, pack: dict) -> bool:
    if core.keys() != pack.keys():
        return False
    for key, value in core.items():
        other = pack[key]
        if isinstance(value, torch.Tensor):
            if not torch.equal(value, other):
                return False
        elif key in ("cond_or_uncond", "uuids"):
            if value != other:
                return False
        elif value is not other and value != other:
            return False
    return True


def test_direct_path_equals_core_output_and_transformer_options(sd15):
    report = {}
    _sample(_comparing_model(sd15, report), _cond(1), _cond(2), cfg=1.0)
    assert report["direct"] == [True, True], "a plain positive at cfg 1 must take the direct path"
    assert all(report["equal"]), "direct path differs from core's calc_cond_batch"
    for core_options, pack_options in report["options"]:
        assert len(core_options) == len(pack_options) == 1
        assert _same_options(core_options[0], pack_options[0]), (core_options[0].keys(), pack_options[0].keys())


@pytest.mark.parametrize("case", ["cfg 2 (cond + uncond)", "area", "strength", "two entries", "timestep range",
                                  "mask", "function wrapper"])
def test_every_other_case_goes_to_core(comfy, sd15, case):
    positive, cfg, model = _cond(1), 1.0, sd15
    if case == "cfg 2 (cond + uncond)":
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
    _sample(_comparing_model(model, report), positive, _cond(2), cfg=cfg)
    assert report["direct"] and not any(report["direct"]), f"{case}: must be left to core"
    assert all(report["equal"])


def _pack_function_installed(model_patcher) -> bool:
    function = model_patcher.model_options.get("sampler_calc_cond_batch_function")
    return function is not None and function.__module__.endswith("comfy_cond_batch") \
        and function.__name__ == "single_cond_batch"


def test_lcm_models_carry_the_direct_path_and_keep_another_nodes_function(comfy, sd15):
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    assert _pack_function_installed(patched) and not _pack_function_installed(sd15)

    custom = sd15.clone()
    custom.set_model_sampler_calc_cond_batch_function(_core_batch)
    (patched_custom,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=custom, original_inference_steps=50,
                                       timestep_scaling=10.0, sigma_data=0.5)
    assert patched_custom.model_options["sampler_calc_cond_batch_function"] is _core_batch


def _core_batch(args):
    """Another node's calc-cond-batch function: plain core batching (the pack leaves it in place)."""
    return cm.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"],
                                          args["model_options"])


def test_lcm_sampling_tables_live_on_the_load_device(comfy, sd15):
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    sampling = patched.get_model_object("model_sampling")
    assert {buffer.device for buffer in sampling.buffers()} == {torch.device(patched.load_device)}


def test_ksampler_lcm_skips_the_per_step_free_memory_query_and_matches_core(comfy, sd15, monkeypatch):
    """Observable effect of the direct path: core's batch sizing (a device memory query per step) is skipped."""
    calls = []
    real = cm.model_management.get_free_memory

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    def run(model):
        calls.clear()
        (out,) = comfy.run_node("LCMPack_KSamplerLCM", model=model, positive=_cond(1), negative=_cond(2),
                                latent_image={"samples": LATENT}, seed=SEED, steps=4, cfg=1.0, sampler="lcm",
                                gamma=0.3, denoise=1.0)
        return out["samples"], len(calls)

    monkeypatch.setattr(cm.model_management, "get_free_memory", counting)
    (patched,) = comfy.run_node("LCMPack_ModelSamplingLCM", model=sd15, original_inference_steps=50,
                                timestep_scaling=10.0, sigma_data=0.5)
    fast, fast_queries = run(patched)
    core_batched = patched.clone()
    core_batched.set_model_sampler_calc_cond_batch_function(_core_batch)
    slow, slow_queries = run(core_batched)
    assert torch.equal(fast, slow), "the direct path changed the sampled latent"
    assert slow_queries - fast_queries >= 4, (slow_queries, fast_queries)


def test_the_lcm_grid_is_computed_once_per_sampling_object_and_arguments(comfy, sd15, monkeypatch):
    """A re-queued KSamplerLCM reuses its schedule (no device round trip per run); new arguments recompute it."""
    import sys

    (pack_sampling,) = [m for name, m in list(sys.modules.items())
                        if name.endswith(".samplers.comfy_model_sampling") and not name.startswith("lcm_lora_pack.")]
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
