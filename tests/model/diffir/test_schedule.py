"""The IPR schedule and sampler as pure functions (no network)."""

from __future__ import annotations

import pytest
import torch

from model.diffir.sampler import sample_ipr
from model.diffir.schedule import check_stored, linear_betas, make_schedule, schedule_buffers
from model.errors import CheckpointError


def test_betas_are_linear_in_sqrt():
    betas = linear_betas(4, 0.1, 0.99)
    assert torch.allclose(betas.sqrt().diff(), torch.full((3,), (0.99 ** .5 - 0.1 ** .5) / 3,
                                                          dtype=torch.float64))
    assert betas[0].item() == pytest.approx(0.1) and betas[-1].item() == pytest.approx(0.99)


def test_posterior_mean_is_the_gaussian_posterior():
    """coef1 x0 + coef2 x_t equals the mean of q(x_{t-1} | x_t, x0) from Bayes' rule."""
    b = schedule_buffers(linear_betas(4, 0.1, 0.99))
    abar, abar_prev, betas = b["alphas_cumprod"], b["alphas_cumprod_prev"], b["betas"]
    x0, xt = torch.randn(3, 256, dtype=torch.float64), torch.randn(3, 256, dtype=torch.float64)
    for t in range(1, 4):
        # precision-weighted combination of q(x_t | x_{t-1}) and q(x_{t-1} | x0)
        prec = (1 - betas[t]) / betas[t] + 1 / (1 - abar_prev[t])
        mean = ((1 - betas[t]).sqrt() / betas[t] * xt
                + abar_prev[t].sqrt() / (1 - abar_prev[t]) * x0) / prec
        ours = b["posterior_mean_coef1"][t] * x0 + b["posterior_mean_coef2"][t] * xt
        assert torch.allclose(ours, mean)
        assert b["posterior_variance"][t].item() == pytest.approx(1 / prec.item())
    # t = 0: the posterior mean is x0 itself
    assert b["posterior_mean_coef1"][0].item() == pytest.approx(1.0)
    assert b["posterior_mean_coef2"][0].item() == 0.0
    assert torch.allclose(abar, torch.cumprod(1 - betas, 0))


def test_sampler_with_a_lambda_denoiser():
    """A denoiser that always answers c makes every step the posterior mean towards c."""
    s = make_schedule(4, 0.1, 0.99)
    c, x = torch.randn(2, 256), torch.randn(2, 256)
    seen = []
    traj = sample_ipr(lambda x_t, t, cond: cond, c, x, s,
                      callback=lambda t, state: seen.append(t), return_trajectory=True)
    assert seen == [3, 2, 1, 0]
    expected = x
    for i, t in enumerate([3, 2, 1, 0]):
        # mu_t = coef1 x0 + coef2 x_t with the stored float32 coefficients: bit for bit
        expected = s.coef1[t] * c + s.coef2[t] * expected
        assert torch.equal(traj[i], expected)
    assert torch.allclose(traj[-1], c)        # the last step lands on x0


def test_check_stored_accepts_subsets_and_refuses_mismatches():
    b = {k: v.float() for k, v in schedule_buffers(linear_betas(4, 0.1, 0.99)).items()}
    s = check_stored(b, 4, 0.1, 0.99)
    assert torch.equal(s.coef1, b["posterior_mean_coef1"])
    assert check_stored({}, 4, 0.1, 0.99).num_steps == 4
    with pytest.raises(CheckpointError, match="timesteps=5"):
        check_stored(b, 5, 0.1, 0.99)
    with pytest.raises(CheckpointError, match="unexpected diffusion buffer"):
        check_stored({"gammas": b["betas"]}, 4, 0.1, 0.99)
