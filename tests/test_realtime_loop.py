"""The fast path's pure parts (samplers/fast_path.py, samplers/fixed_loops.py): each fixed loop equals its eager
sampler (the pack's LCM and TCD loops, core's Euler, Euler ancestral, DPM++ 2M), the pre-drawn noise equals the
eager draws, static buffers refuse other shapes, and the capture cache keys and reasons."""
from __future__ import annotations

import types

import pytest
import torch
from lcm_lora_pack.samplers import fast_path, fixed_loops
from lcm_lora_pack.samplers.lcm_sampler import lcm_loop, seeded_noise_sampler, tcd_loop, tcd_schedule

SIGMAS = torch.tensor([14.6146, 4.0817, 1.2522, 0.3653, 0.0])


def _noise_scaling(sigma, noise, latent_image, max_denoise=False):
    """ComfyUI's EPS.noise_scaling (comfy/model_sampling.py), the arithmetic both loops re-noise with."""
    sigma = sigma.reshape(sigma.shape[:1] + (1,) * (noise.ndim - 1))
    noise = noise * torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else noise * sigma
    return noise + latent_image


def _denoiser(x, sigma):
    """A stand-in x̂₀(x, σ): nonlinear in both, so a wrong σ or a stale x changes the result."""
    return torch.tanh(x / (1.0 + sigma.reshape(-1, 1, 1, 1) ** 2) ** 0.5) * 0.9 + 0.01 * sigma.reshape(-1, 1, 1, 1)


def _buffers(noise, latent, step_noise, sigmas=SIGMAS):
    values = {"noise": noise, "latent_image": latent, "sigmas": sigmas, "step_noise": step_noise}
    buffers = fast_path.StaticBuffers(values, "cpu")
    buffers.load(values)
    return buffers


@pytest.mark.parametrize("max_denoise", [True, False])
def test_fixed_loop_equals_the_pack_lcm_loop(max_denoise):
    generator = torch.Generator().manual_seed(0)
    noise, latent = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    plan = fixed_loops.lcm_plan(SIGMAS.tolist(), max_denoise)
    x0 = _noise_scaling(SIGMAS[0], noise, latent, max_denoise)  # what KSAMPLER.sample hands the sampler
    s_in = x0.new_ones([x0.shape[0]])
    expected = lcm_loop(lambda x, sigma: _denoiser(x, sigma * s_in), x0, SIGMAS, seeded_noise_sampler(x0, 123),
                        lambda sigma, z, x: _noise_scaling(sigma, z, x))
    step_noise = fixed_loops.draw_step_noise(x0.shape, x0.dtype, "cpu", 123, plan.noise_draws)
    out = fixed_loops.lcm_fixed_loop(_denoiser, _noise_scaling, lambda sigma, x: x,
                                   _buffers(noise, latent, step_noise), plan)
    assert torch.equal(out["samples"], expected)
    assert set(out) == {"samples", *(f"{kind}_{i}" for i in range(4) for kind in ("x", "denoised"))}


@pytest.mark.parametrize("sigmas", [SIGMAS, SIGMAS[1:], torch.tensor([2.5, 1.1, 0.4, 0.02])])
def test_euler_loop_equals_core_sample_euler(sigmas):
    """Full, split (img2img) and non-zero-ending schedules: core's ``sample_euler`` on the same x, bit for bit."""
    from comfy.k_diffusion.sampling import sample_euler

    generator = torch.Generator().manual_seed(1)
    noise, latent = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    x0 = _noise_scaling(sigmas[0], noise, latent, False)
    expected = sample_euler(lambda x, sigma: _denoiser(x, sigma), x0, sigmas, disable=True)
    plan = fixed_loops.fixed_plan("euler", sigmas.tolist(), False)
    out = fixed_loops.euler_fixed_loop(_denoiser, _noise_scaling, lambda sigma, x: x,
                                     _buffers(noise, latent, torch.zeros(1, 2, 4, 8, 8), sigmas), plan)
    assert plan.noise_draws == 0 and plan.steps == len(sigmas) - 1
    assert torch.equal(out["samples"], expected)


class _CoreModel:
    """What a k-diffusion sampler function receives (``KSamplerX0Inpaint``): x̂₀ = ``_denoiser``; an EPS model."""

    inner_model = types.SimpleNamespace(inner_model=types.SimpleNamespace(model_sampling=None))

    def __call__(self, x, sigma, **extra_args):
        return _denoiser(x, sigma)


@pytest.mark.parametrize("sigmas", [SIGMAS, SIGMAS[1:], torch.tensor([2.5, 1.1, 0.4, 0.02])])
def test_ancestral_and_dpmpp_2m_loops_equal_core(sigmas):
    """Core's ``sample_euler_ancestral`` (its noise sampler, seed 5) and ``sample_dpmpp_2m`` on the same x, bit for
    bit, with the host decisions made as ``host/comfy_fast_plans.py`` makes them (core's ``get_ancestral_step``)."""
    from comfy.k_diffusion import sampling

    generator = torch.Generator().manual_seed(2)
    noise, latent = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    x0 = _noise_scaling(sigmas[0], noise, latent, False)
    rows = [sampling.get_ancestral_step(sigmas[i], sigmas[i + 1]) for i in range(len(sigmas) - 1)]
    plan = fixed_loops.fixed_plan("euler_ancestral", sigmas.tolist(), False, [bool(down != 0) for down, _ in rows])
    buffers = _buffers(noise, latent, fixed_loops.draw_step_noise(x0.shape, x0.dtype, "cpu", 5, plan.noise_draws,
                                                                  sampling.default_noise_sampler), sigmas)
    buffers.tensors["ancestral"] = torch.stack([torch.stack(list(row)) for row in rows])
    out = fixed_loops.euler_ancestral_fixed_loop(_denoiser, _noise_scaling, lambda sigma, x: x, buffers, plan)
    expected = sampling.sample_euler_ancestral(_CoreModel(), x0, sigmas, extra_args={"seed": 5}, disable=True)
    assert plan.noise_draws == int((sigmas[1:] > 0).sum()) and torch.equal(out["samples"], expected)
    plan = fixed_loops.fixed_plan("dpmpp_2m", sigmas.tolist(), False)
    out = fixed_loops.dpmpp_2m_fixed_loop(_denoiser, _noise_scaling, lambda sigma, x: x,
                                          _buffers(noise, latent, torch.zeros(1, 2, 4, 8, 8), sigmas), plan)
    assert plan.branches[0] and plan.branches[-1] == (sigmas[-1] == 0)
    assert torch.equal(out["samples"], sampling.sample_dpmpp_2m(_CoreModel(), x0, sigmas, disable=True))


@pytest.mark.parametrize("gamma", [0.3, 0.0, 1.0])
def test_tcd_loop_equals_the_pack_tcd_loop(gamma):
    """The pack's ``tcd_loop`` (its seeded noise, seed 7) on the same x: the host's ``tcd_schedule`` decides the
    last steps and s, σ_s goes into a buffer; γ 0 draws nothing."""
    train_sigmas = torch.linspace(0.03, 14.6, 1000)

    def timestep_of(sigma):
        return int((train_sigmas - sigma).abs().argmin())

    generator = torch.Generator().manual_seed(3)
    noise, latent = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    x0 = _noise_scaling(SIGMAS[0], noise, latent, True)
    s_in = x0.new_ones([x0.shape[0]])
    expected = tcd_loop(lambda x, sigma: _denoiser(x, sigma * s_in), x0, SIGMAS, seeded_noise_sampler(x0, 7),
                        lambda sigma, z, x: _noise_scaling(sigma, z, x), timestep_of, train_sigmas, gamma)
    last, s_indices = tcd_schedule(SIGMAS, timestep_of, gamma)
    plan = fixed_loops.fixed_plan("tcd", SIGMAS.tolist(), True, [not end and gamma > 0 for end in last],
                                  (gamma, tuple(last), tuple(s_indices)))
    buffers = _buffers(noise, latent, fixed_loops.draw_step_noise(x0.shape, x0.dtype, "cpu", 7, plan.noise_draws))
    buffers.tensors["tcd_sigma_s"] = torch.stack([train_sigmas[index].to(x0) for index in s_indices])
    out = fixed_loops.tcd_fixed_loop(_denoiser, _noise_scaling, lambda sigma, x: x, buffers, plan)
    assert plan.noise_draws == (3 if gamma > 0 else 0) and torch.equal(out["samples"], expected)


def test_plan_from_sigmas_and_partial_schedules():
    assert fixed_loops.lcm_plan([14.6, 1.0, 0.0], True) == fixed_loops.LoopPlan(2, (True, False), True)
    assert fixed_loops.lcm_plan([3.0, 1.0, 0.5], False).noise_draws == 2  # a schedule that does not end in 0
    with pytest.raises(fast_path.FastPathUnavailable):
        fixed_loops.lcm_plan([1.0], True)


def test_pre_drawn_noise_is_the_eager_sequence():
    x = torch.zeros(1, 4, 8, 8)
    draw = seeded_noise_sampler(x, 9)
    expected = torch.stack([draw(None, None) for _ in range(3)])
    assert torch.equal(fixed_loops.draw_step_noise(x.shape, x.dtype, "cpu", 9, 3), expected)
    assert fixed_loops.draw_step_noise(x.shape, x.dtype, "cpu", 9, 0).shape == (1, 1, 4, 8, 8)


def test_pre_drawn_noise_follows_the_eager_samplers_own_factory():
    """Core's ``default_noise_sampler`` seeds its CPU generator with seed + 1 on ComfyUI 0.8.0: the pre-drawn noise
    must come from whatever factory the eager sampler uses, not from a copy of one version's rule."""
    def shifted(x, seed):
        return seeded_noise_sampler(x, seed + 1)

    x = torch.zeros(1, 4, 8, 8)
    draw = shifted(x, 9)
    expected = torch.stack([draw(None, None) for _ in range(2)])
    got = fixed_loops.draw_step_noise(x.shape, x.dtype, "cpu", 9, 2, shifted)
    assert torch.equal(got, expected)
    assert not torch.equal(got, fixed_loops.draw_step_noise(x.shape, x.dtype, "cpu", 9, 2))


def test_static_buffers_keep_their_addresses_and_refuse_other_shapes():
    buffers = fast_path.StaticBuffers({"a": torch.zeros(2, 3)}, "cpu")
    address = buffers["a"].data_ptr()
    buffers.load({"a": torch.ones(2, 3)})
    assert buffers["a"].data_ptr() == address and torch.equal(buffers["a"], torch.ones(2, 3))
    with pytest.raises(fast_path.FastPathUnavailable, match="captured"):
        buffers.load({"a": torch.ones(3, 3)})
    with pytest.raises(fast_path.FastPathUnavailable):
        buffers.load({"b": torch.ones(2, 3)})


def test_eager_replay_backend_reads_the_buffers_on_every_replay():
    buffers = fast_path.StaticBuffers({"a": torch.zeros(3)}, "cpu")
    captured = fast_path.EagerReplayBackend().capture(lambda: {"out": buffers["a"] * 2}, warmup=1)
    buffers.load({"a": torch.tensor([1.0, 2.0, 3.0])})
    out = captured.replay()["out"]
    assert torch.equal(out, torch.tensor([2.0, 4.0, 6.0]))
    assert captured.replay()["out"] is out  # static output: overwritten by each replay


def _entry():
    return fast_path.CacheEntry(captured=None, buffers=None)


def test_cache_reasons_weights_drop_and_lru():
    cache = fast_path.CaptureCache(capacity=2)
    assert cache.reason_for("w1", "s1") == ("capture", "first call")
    cache.put("w1", "s1", _entry(), fast_path.CaptureEvent("capture", "first call", 0.1))
    assert cache.get("w1", "s1") is not None and cache.get("w1", "s2") is None
    assert cache.reason_for("w1", "s2") == ("capture", "new shapes or schedule")
    cache.put("w1", "s2", _entry(), fast_path.CaptureEvent("capture", "new", 0.1))
    kind, reason = cache.reason_for("w2", "s1")
    assert kind == "recapture" and "weights changed" in reason
    cache.put("w2", "s1", _entry(), fast_path.CaptureEvent(kind, reason, 0.2))
    assert list(cache.entries) == [("w2", "s1")]  # graphs of the old weights are dropped
    cache.put("w2", "s2", _entry(), fast_path.CaptureEvent("capture", "new", 0.1))
    cache.get("w2", "s1")
    cache.put("w2", "s3", _entry(), fast_path.CaptureEvent("capture", "new", 0.1))
    assert list(cache.entries) == [("w2", "s1"), ("w2", "s3")]  # least recently used dropped
    assert "recapture (weights changed" in cache.events[2].line()


def test_pointer_token_changes_only_when_a_tensor_is_replaced():
    module = torch.nn.Linear(3, 3)
    slots = fast_path.tensor_slots(module)
    token = fast_path.pointer_token(slots)
    with torch.no_grad():
        module.weight.mul_(2.0)  # new values, same storage: a graph stays valid
    assert fast_path.pointer_token(slots) == token
    module.weight = torch.nn.Parameter(module.weight.detach().clone())  # how ComfyUI patches a LoRA in
    assert fast_path.pointer_token(slots) != token
