import json
import math

import numpy as np
import pytest

from model.schedule import (geometric_sqrt_etas, make_schedule, official_sqrt_etas,
                            paper_sqrt_etas, schedule_from_config)


def test_official_exponential_matches_readme_values():
    s = official_sqrt_etas(4, min_noise_level=0.2, etas_end=0.99, kappa=2.0, power=0.3)
    np.testing.assert_allclose(s, [0.1, 0.52009637, 0.76138199, 0.99], atol=1e-8)


def test_schedule_matches_reference_vectors(reference_dir):
    ref = json.loads((reference_dir / "realsr_small.json").read_text())
    sched = schedule_from_config(ref["config"]["diffusion"])
    for name in ("sqrt_etas", "etas", "posterior_variance", "posterior_mean_coef1",
                 "posterior_mean_coef2"):
        np.testing.assert_allclose(getattr(sched, name), ref["schedule"][name], rtol=1e-12,
                                   atol=1e-15, err_msg=name)
    assert sched.kappa == ref["schedule"]["kappa"]


@pytest.mark.parametrize("kappa,steps,p", [(2.0, 4, 0.3), (1.0, 15, 0.3), (0.5, 50, 0.8)])
def test_paper_schedule_is_eq_9_10(kappa, steps, p):
    eta1 = min((0.04 / kappa) ** 2, 0.001)
    etaT = 0.999
    b0 = math.exp(math.log(etaT / eta1) / (2 * (steps - 1)))
    expected = [math.sqrt(eta1) * b0 ** (((t - 1) / (steps - 1)) ** p * (steps - 1))
                for t in range(1, steps + 1)]
    got = paper_sqrt_etas(steps, kappa, p)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[0] ** 2 == pytest.approx(eta1) and got[-1] ** 2 == pytest.approx(etaT)
    assert np.all(np.diff(got) > 0)


def test_posterior_coefficients_follow_the_formulas():
    sq = geometric_sqrt_etas(6, 0.05, 0.99, 0.5)
    s = make_schedule(sq, kappa=1.5)
    eta = sq ** 2
    prev = np.concatenate([[0.0], eta[:-1]])
    alpha = eta - prev
    np.testing.assert_allclose(s.posterior_mean_coef1, prev / eta)
    np.testing.assert_allclose(s.posterior_mean_coef2, alpha / eta)
    np.testing.assert_allclose(s.posterior_variance, 1.5 ** 2 * prev / eta * alpha)
    # the posterior mean interpolates: coef1 + coef2 == 1, and t=1 returns x0 exactly
    np.testing.assert_allclose(s.posterior_mean_coef1 + s.posterior_mean_coef2, 1.0)
    assert s.posterior_variance[0] == 0.0 and s.posterior_mean_coef2[0] == 1.0


def test_input_scale_latent_and_pixel():
    s = schedule_from_config({"steps": 4, "kappa": 2.0, "min_noise_level": 0.2,
                              "etas_end": 0.99, "schedule_kwargs": {"power": 0.3}})
    assert s.input_scale(3) == pytest.approx(math.sqrt(4 * 0.99 ** 2 + 1))
    assert s.input_scale(3, latent=False) == pytest.approx(3 * 2 * 0.99 + 1)


def test_bad_schedule_arguments_are_rejected():
    with pytest.raises(ValueError):
        geometric_sqrt_etas(0, 0.1, 0.99, 0.3)
    with pytest.raises(ValueError):
        geometric_sqrt_etas(4, 0.5, 0.1, 0.3)
    with pytest.raises(ValueError):
        schedule_from_config({"steps": 4, "kappa": 1, "schedule_name": "cosine"})
