"""The sampler with simple callables as denoisers (no network): Algorithm 2's arithmetic."""

import numpy as np
import pytest
import torch

from model.sampler import draw_noises, q_sample, sample, step
from model.schedule import official_sqrt_etas, make_schedule

SCHED = make_schedule(official_sqrt_etas(4, 0.2, 0.99, 2.0, 0.3), 2.0)


def test_perfect_denoiser_lands_on_x0_and_trajectory_has_T_plus_1_states():
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = x0 + 0.5
    traj = sample(lambda x, t, lq, m: x0, y, SCHED, generator=torch.Generator().manual_seed(0),
                  return_trajectory=True)
    assert len(traj) == 5
    # last step: coef1[0] = 0 and coef2[0] = 1 and no noise, so x_0 equals the prediction
    torch.testing.assert_close(traj[-1], x0)


def test_explicit_noises_are_used_as_documented():
    y = torch.zeros(1, 1, 4, 4)
    noises = [torch.full_like(y, float(i + 1)) for i in range(5)]
    seen = []

    def den(x, t, lq, m):
        seen.append((int(t[0]), x.clone()))
        return torch.zeros_like(x)
    traj = sample(den, y, SCHED, noises=noises, return_trajectory=True)
    x_T = SCHED.kappa * SCHED.sqrt_etas[-1] * 1.0
    assert traj[0].flatten()[0].item() == pytest.approx(x_T, rel=1e-6)
    assert [s[0] for s in seen] == [3, 2, 1, 0]
    # the denoiser gets the raw x_t (scaling it for a network is the denoiser's business)
    assert seen[0][1].flatten()[0].item() == pytest.approx(x_T, rel=1e-6)
    # step 1 (t=3) adds noises[1] scaled by the posterior std
    expect = SCHED.posterior_mean_coef1[3] * x_T + np.sqrt(SCHED.posterior_variance[3]) * 2.0
    assert traj[1].flatten()[0].item() == pytest.approx(expect, rel=1e-6)


def test_seeded_sampling_is_reproducible_and_per_item_generators_isolate_items():
    y = torch.randn(2, 3, 8, 8)
    den = lambda x, t, lq, m: 0.5 * x  # noqa: E731
    a = sample(den, y, SCHED, generator=torch.Generator().manual_seed(7))
    b = sample(den, y, SCHED, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
    both = sample(den, y, SCHED, generator=gens)
    alone = sample(den, y[1:], SCHED, generator=[torch.Generator().manual_seed(12)])
    torch.testing.assert_close(both[1:], alone)


def test_single_step_mode_returns_the_prediction_at_the_last_timestep():
    y = torch.randn(1, 3, 8, 8)
    calls = []

    def den(x, t, lq, m):
        calls.append(int(t[0]))
        return torch.ones_like(x)
    out = sample(den, y, SCHED, mode="single_step", generator=torch.Generator().manual_seed(0))
    assert calls == [3]
    torch.testing.assert_close(out, torch.ones_like(y))


def test_clip_denoised_clamps_predictions():
    y = torch.zeros(1, 3, 4, 4)
    den = lambda x, t, lq, m: torch.full_like(x, 5.0)  # noqa: E731
    out = sample(den, y, SCHED, clip_denoised=True, generator=torch.Generator().manual_seed(0))
    assert out.max().item() <= 1.0
    free = sample(den, y, SCHED, generator=torch.Generator().manual_seed(0))
    assert free.max().item() == pytest.approx(5.0)


def test_q_sample_mean_and_variance():
    x0, y = torch.zeros(20000, 1, 1, 1), torch.ones(20000, 1, 1, 1)
    t = torch.full((20000,), 2, dtype=torch.long)
    xt = q_sample(x0, y, SCHED, t, torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(3)))
    assert xt.mean().item() == pytest.approx(SCHED.etas[2], abs=0.03)
    assert xt.std().item() == pytest.approx(SCHED.kappa * SCHED.sqrt_etas[2], rel=0.03)


def test_step_has_no_noise_at_t0():
    x, x0 = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    torch.testing.assert_close(step(SCHED, 0, x, x0, torch.randn(1, 1, 2, 2)), x0)


def _posterior_formula(x_t, x0, t, noise):
    """x_{t-1} as eq. 6-7 write it, from the schedule's arrays."""
    mean = (float(SCHED.posterior_mean_coef1[t]) * x_t
            + float(SCHED.posterior_mean_coef2[t]) * x0)
    return mean + float(SCHED.posterior_variance[t]) ** 0.5 * noise


@pytest.mark.parametrize("t", [3, 1])
def test_step_is_the_posterior_bit_for_bit_in_place_or_not(t):
    gen = torch.Generator().manual_seed(t)
    x_t, x0, noise = (torch.randn(2, 3, 5, 7, generator=gen) for _ in range(3))
    want = _posterior_formula(x_t, x0, t, noise)
    assert torch.equal(step(SCHED, t, x_t, x0, noise), want)
    # in place: the same numbers in x_t's memory; a noise function draws into x0's
    a, b = x_t.clone(), x0.clone()
    got = step(SCHED, t, a, b, lambda spare: spare.copy_(noise), inplace=True)
    assert got.data_ptr() == a.data_ptr() and torch.equal(got, want)
    # without a noise the step is the posterior mean
    assert torch.equal(step(SCHED, t, x_t, x0), _posterior_formula(x_t, x0, t, 0 * noise))


def test_step_clips_and_single_step_returns_the_clipped_prediction():
    x_t, x0 = torch.zeros(1, 1, 2, 2), torch.tensor([[[[3.0, -2.0], [0.5, -0.25]]]])
    clipped = x0.clamp(-1, 1)
    assert torch.equal(step(SCHED, 2, x_t, x0, clip=True, mode="single_step"), clipped)
    assert torch.equal(step(SCHED, 2, x_t, x0, mode="single_step"), x0)
    assert torch.equal(step(SCHED, 2, x_t, x0, clip=True),
                       _posterior_formula(x_t, clipped, 2, torch.zeros_like(x0)))
    with pytest.raises(ValueError, match="mode"):
        step(SCHED, 2, x_t, x0, mode="ddim")


def test_a_noise_function_is_called_only_when_the_step_adds_noise():
    calls = []

    def noise(spare):
        calls.append(spare)
        return torch.ones(1, 1, 2, 2)
    x = torch.ones(1, 1, 2, 2)
    step(SCHED, 0, x, x, noise)
    step(SCHED, 1, x, x, noise, mode="single_step")
    assert calls == []
    step(SCHED, 1, x, x, noise)
    assert calls == [None]


def test_draw_noises_count_and_generator_mismatch():
    assert len(draw_noises((1, 3, 4, 4), 5, torch.Generator().manual_seed(0))) == 5
    with pytest.raises(ValueError):
        draw_noises((2, 3, 4, 4), 2, [torch.Generator()])
