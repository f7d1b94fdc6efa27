"""The pack's LCM timestep rule equals diffusers' LCMScheduler / TCDScheduler.set_timesteps (run in the test)."""
from __future__ import annotations

import pytest
from diffusers import LCMScheduler, TCDScheduler
from lcm_lora_pack.samplers.timesteps import LCMScheduleError, check_custom_timesteps, lcm_timesteps, parse_timesteps

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _diffusers_timesteps(scheduler_class, steps, original_steps, strength, timesteps=None):
    scheduler = scheduler_class(original_inference_steps=original_steps, **SD_BETAS)
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=timesteps, strength=strength)
    elif scheduler_class is LCMScheduler:
        scheduler.set_timesteps(steps, original_inference_steps=original_steps, strength=strength)
    else:  # TCD: passing original_inference_steps switches it to the full 1000-step grid; use its config
        scheduler.set_timesteps(steps, strength=strength)
    return scheduler.timesteps.tolist()


@pytest.mark.parametrize("scheduler_class", [LCMScheduler, TCDScheduler])
@pytest.mark.parametrize("original_steps", [50, 25, 20, 10])
@pytest.mark.parametrize("strength", [1.0, 0.5, 0.3])
def test_grid_equals_diffusers(scheduler_class, original_steps, strength):
    for steps in range(1, 9):
        if steps > int(original_steps * strength):
            with pytest.raises(ValueError):
                _diffusers_timesteps(scheduler_class, steps, original_steps, strength)
            with pytest.raises(LCMScheduleError, match="lower steps"):
                lcm_timesteps(steps, original_steps, strength)
            continue
        ours = lcm_timesteps(steps, original_steps, strength)
        assert ours == _diffusers_timesteps(scheduler_class, steps, original_steps, strength), (steps, ours)


def test_known_values_of_the_default_grid():
    # Cross-check against the values diffusers >= 0.24 documents (not the <= 0.23 rule 999, 759, 519, 279).
    assert lcm_timesteps(4) == _diffusers_timesteps(LCMScheduler, 4, 50, 1.0) == [999, 759, 499, 259]


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_custom_timesteps_equal_diffusers_and_warn_off_grid(strength):
    custom = [999, 749, 499, 249]
    schedule = check_custom_timesteps(custom, 50, strength)
    assert schedule.timesteps == _diffusers_timesteps(LCMScheduler, None, 50, strength, timesteps=custom)
    assert any("[749, 249]" in w and "not on the distillation grid" in w for w in schedule.warnings)


def test_on_grid_custom_timesteps_have_no_warning():
    assert check_custom_timesteps([999, 759, 499, 259]).warnings == []


@pytest.mark.parametrize("bad, message", [
    ([999, 999, 499], "strictly descending"),
    ([499, 999], "strictly descending"),
    ([1000, 499], "outside 0..999"),
    ([999, -1], "outside 0..999"),
    ([], "empty"),
    ([999.5], "integers"),
])
def test_bad_custom_timesteps_raise(bad, message):
    with pytest.raises(LCMScheduleError, match=message):
        check_custom_timesteps(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "at least 1"),
    ({"steps": 51}, "exceeds the 50 timesteps"),
    ({"steps": 1, "strength": 0.01}, "leaves no LCM step"),
    ({"steps": 1, "strength": 0.0}, r"must be in \(0, 1\]"),
    ({"steps": 1, "strength": 1.5}, r"must be in \(0, 1\]"),
    ({"steps": 1, "original_inference_steps": 0}, "must be in 1..1000"),
    ({"steps": 1, "original_inference_steps": 1001}, "must be in 1..1000"),
])
def test_bad_schedules_raise_with_the_fix(kwargs, message):
    with pytest.raises(LCMScheduleError, match=message):
        lcm_timesteps(**kwargs)


def test_parse_timesteps():
    assert parse_timesteps("999, 759,499 259") == [999, 759, 499, 259]
    assert parse_timesteps("  ") == []
    with pytest.raises(LCMScheduleError, match="integers"):
        parse_timesteps("999, abc")
