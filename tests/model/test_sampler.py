"""The sampler with simple callables as denoisers (no network): Algorithm 2's arithmetic."""

import numpy as np
import pytest
import torch

from model.sampler import draw_noises, posterior_step, q_sample, sample
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
    # network input is x_t / sqrt(kappa^2 eta_t + 1)
    assert seen[0][1].flatten()[0].item() == pytest.approx(
        x_T / np.sqrt(4 * SCHED.etas[3] + 1), rel=1e-6)
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


def test_pixel_models_clip_predictions_by_default():
    y = torch.zeros(1, 3, 4, 4)
    out = sample(lambda x, t, lq, m: torch.full_like(x, 5.0), y, SCHED, latent=False,
                 generator=torch.Generator().manual_seed(0))
    assert out.max().item() <= 1.0


def test_q_sample_mean_and_variance():
    x0, y = torch.zeros(20000, 1, 1, 1), torch.ones(20000, 1, 1, 1)
    t = torch.full((20000,), 2, dtype=torch.long)
    xt = q_sample(x0, y, SCHED, t, torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(3)))
    assert xt.mean().item() == pytest.approx(SCHED.etas[2], abs=0.03)
    assert xt.std().item() == pytest.approx(SCHED.kappa * SCHED.sqrt_etas[2], rel=0.03)


def test_posterior_step_has_no_noise_at_t0():
    x, x0 = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    torch.testing.assert_close(posterior_step(x, x0, SCHED, 0, torch.randn(1, 1, 2, 2)), x0)


def test_draw_noises_count_and_generator_mismatch():
    assert len(draw_noises((1, 3, 4, 4), 5, torch.Generator().manual_seed(0))) == 5
    with pytest.raises(ValueError):
        draw_noises((2, 3, 4, 4), 2, [torch.Generator()])
