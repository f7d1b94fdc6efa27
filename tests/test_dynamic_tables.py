"""Under Dynamic VRAM the pack's model sampling keeps its own tables, and the checkpoint's keeps its own (issue 21).

ComfyUI 0.33's ``ModelPatcherDynamic`` records the model's buffers by attribute path and puts them back by path
at the next load or unload, whichever object ``model_sampling`` names then (``host/comfy_dynamic_tables.py``
docstring). On an H100 that gave the pack's LCM sampling the checkpoint's 1 000-entry σ table after a plain job;
its boundary lookup went out of bounds and the server died (runs DV4, DV6). Dynamic VRAM needs a GPU
(``comfy_aimdo``), so these tests drive core's own pieces on the CPU: ``comfy.utils.set_attr_buffer`` (how the
restore writes) and ``ModelPatcherDynamic.restore_loaded_backups`` (0.33+), with the three lines of
``ModelPatcherDynamic.load`` that record the buffers (``for key, buf in self.model.named_buffers(...)``) written
out in :func:`_record_buffers_as_dynamic_load_does`. The GPU sequence is ``bench/device/bench_dv_sequences.py``.
"""
from __future__ import annotations

import pytest
import torch
from conftest import SD15_CKPT
from lcm_lora_pack.host import comfy_dynamic_tables
from lcm_lora_pack.host.comfy_model_sampling import lcm_patched_clone, make_lcm_model_sampling

LATENT = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def _outputs(sampling, sigma):
    return {"timestep": sampling.timestep(sigma), "sigma": sampling.sigma(torch.tensor([999.0, 499.0, 19.0])),
            "ends": torch.stack([sampling.sigma_min, sampling.sigma_max]),
            "denoised": sampling.calculate_denoised(sigma[:1], LATENT, LATENT * 2)}


@pytest.mark.parametrize("boundary", [True, False])
def test_the_lcm_samplings_lookups_survive_its_buffers_being_replaced(comfy, boundary):
    """Core's restore writes another object's σ table over the pack's ``sigmas``/``log_sigmas`` buffers: the
    pack's lookups (timestep ↔ σ, σ_min/σ_max, the boundary) still give what they gave before."""
    import comfy.model_sampling
    import comfy.utils

    sampling = make_lcm_model_sampling(None, "eps", 50, boundary=boundary)
    sigma = torch.stack([sampling.sigma_max, sampling.sigmas[len(sampling.sigmas) // 2], sampling.sigma_min])
    before = _outputs(sampling, sigma)
    checkpoint_sampling = type("Plain", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS), {})()
    holder = torch.nn.Module()
    holder.model_sampling = sampling
    restore = getattr(comfy.utils, "set_attr_buffer", None)  # 0.33's restore writes with it (resolve, register)
    for name in ("sigmas", "log_sigmas"):
        if restore is not None:
            restore(holder, f"model_sampling.{name}", getattr(checkpoint_sampling, name))
        else:
            sampling.register_buffer(name, getattr(checkpoint_sampling, name))
    assert len(sampling.sigmas) == 1000  # the restore did reach the buffers
    after = _outputs(sampling, sigma)
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def _record_buffers_as_dynamic_load_does(patcher):
    """``ModelPatcherDynamic.load`` (comfy/model_patcher.py, 0.33.0): every buffer not yet recorded is recorded
    by path (the device copy it then sets is the same tensor on the CPU)."""
    for key, buf in patcher.model.named_buffers(recurse=True):
        if key not in patcher.backup_buffers:
            patcher.backup_buffers[key] = buf


@pytest.fixture
def dynamic_restore():
    import comfy.model_patcher

    dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
    if dynamic is None:
        pytest.skip("this ComfyUI has no Dynamic VRAM (ModelPatcherDynamic: 0.16+)")

    def restore(patcher):
        memory = patcher.model.model_loaded_weight_memory
        dynamic.restore_loaded_backups(patcher)
        patcher.model.model_loaded_weight_memory = memory  # the CPU model stays loaded for the other tests

    return restore


@pytest.fixture
def fresh_checkpoint(comfy):
    return comfy.run_node("CheckpointLoaderSimple", ckpt_name=SD15_CKPT)[0]


def _lcm_clone(model):
    sampling = make_lcm_model_sampling(model.model.model_config, "eps", 50)
    return lcm_patched_clone(model, sampling), sampling


@pytest.mark.parametrize("repaired", [True, False])
def test_an_lcm_job_first_leaves_the_checkpoints_sampling_its_own(fresh_checkpoint, dynamic_restore, repaired):
    """Empty record (the model's first load is the LCM job): the load records the LCM grid under
    ``model_sampling.sigmas``; the next restore, with the checkpoint's own sampling back in place, must not give
    it the grid. Without the repair it does (the ``repaired=False`` case shows the ComfyUI bug)."""
    model = fresh_checkpoint
    original = model.get_model_object("model_sampling")
    table = original.sigmas.clone()
    clone, sampling = _lcm_clone(model)
    model.backup_buffers.clear()
    clone.patch_model(load_weights=False)
    _record_buffers_as_dynamic_load_does(clone)
    if repaired:
        comfy_dynamic_tables.repair(clone, sampling, comfy_dynamic_tables.own_tables(sampling))
    clone.unpatch_model(unpatch_weights=False)
    dynamic_restore(model)
    assert model.model.model_sampling is original
    assert torch.equal(original.sigmas, table) is repaired
    assert not hasattr(original, "boundary_c_skip") and not hasattr(original, "grid_sigmas")


def test_an_lcm_job_after_a_plain_one_samples_on_its_own_grid(fresh_checkpoint, dynamic_restore):
    """A plain job recorded the checkpoint's table; the LCM job's load restores it onto the pack's sampling by
    path; after the repair the pack's sampling holds its grid again and the record holds the checkpoint's own."""
    model = fresh_checkpoint
    original = model.get_model_object("model_sampling")
    model.backup_buffers.clear()
    _record_buffers_as_dynamic_load_does(model)  # the plain job's load
    clone, sampling = _lcm_clone(model)
    grid, tables = sampling.sigmas, comfy_dynamic_tables.own_tables(sampling)  # what protect() keeps
    clone.patch_model(load_weights=False)
    dynamic_restore(clone)  # the LCM job's load: restore first ...
    assert len(sampling.sigmas) == 1000  # ... puts the checkpoint's table on the pack's object (the bug)
    _record_buffers_as_dynamic_load_does(clone)  # ... then records
    restored = comfy_dynamic_tables.repair(clone, sampling, tables)
    assert restored == ["sigmas", "log_sigmas"] and sampling.sigmas is grid
    assert clone.backup_buffers["model_sampling.sigmas"] is original.sigmas
    clone.unpatch_model(unpatch_weights=False)
    dynamic_restore(model)
    assert len(original.sigmas) == 1000 and model.model.model_sampling is original


def test_the_repair_is_wired_to_core_load_callbacks_only_under_dynamic_vram(fresh_checkpoint):
    """Static hosts (0.3.75, 0.8.0, ``--disable-dynamic-vram``): no callback, the clone is as before. A dynamic
    patcher gets one ON_LOAD callback (one, however often the clone is re-patched) that core's load calls; it
    puts the tables back (on hosts without Dynamic VRAM's record it says so and skips the record's repair)."""
    import comfy.patcher_extension as extensions

    on_load = extensions.CallbacksMP.ON_LOAD
    static_clone, _ = _lcm_clone(fresh_checkpoint)
    assert static_clone.get_all_callbacks(on_load) == fresh_checkpoint.get_all_callbacks(on_load)
    clone, sampling = _lcm_clone(fresh_checkpoint)
    clone.is_dynamic = lambda: True  # this patcher object only: what ModelPatcherDynamic answers
    comfy_dynamic_tables.protect(clone, sampling)
    comfy_dynamic_tables.protect(clone, sampling)
    (callback,) = clone.get_all_callbacks(on_load)
    other = make_lcm_model_sampling(fresh_checkpoint.model.model_config, "eps", 25)
    clone.patch_model(load_weights=False)
    try:
        sampling.register_buffer("sigmas", other.sigmas)  # what a restore by path would have written
        callback(clone, None, 0, False, False)
        assert len(sampling.sigmas) == 50
    finally:
        clone.unpatch_model(unpatch_weights=False)
