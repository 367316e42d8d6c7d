"""Blur kernels: exact properties and the statistics of the random draws (seeded)."""

import math

import numpy as np
import pytest

from model.degradations.kernels import (KERNEL_TYPES, KernelSpec, bessel_j1, gaussian_kernel,
                                        generalized_gaussian_kernel, plateau_kernel,
                                        pulse_kernel, random_final_sinc, random_kernel,
                                        sinc_kernel)


def _moments(k):
    half = k.shape[0] // 2
    ax = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(ax, ax)
    return ((k * xx * xx).sum(), (k * yy * yy).sum(), (k * xx * yy).sum(),
            (k * xx).sum(), (k * yy).sum())


def test_bessel_j1_known_values():
    # Abramowitz & Stegun table 9.1
    np.testing.assert_allclose(bessel_j1(np.array([0.0, 1.0, 2.0, 5.0, 10.0])),
                               [0.0, 0.4400505857, 0.5767248078, -0.3275791376, 0.0434727462],
                               atol=1e-9)


def test_gaussian_second_moments_match_the_covariance():
    sx, sy, theta = 2.0, 1.0, math.pi / 6
    xx, yy, xy, mx, my = _moments(gaussian_kernel(41, sx, sy, theta))
    c, s = math.cos(theta), math.sin(theta)
    cov = np.array([[c, -s], [s, c]]) @ np.diag([sx ** 2, sy ** 2]) @ np.array([[c, s], [-s, c]])
    np.testing.assert_allclose([xx, yy, xy], [cov[0, 0], cov[1, 1], cov[0, 1]], atol=1e-3)
    assert abs(mx) < 1e-12 and abs(my) < 1e-12          # centred


def test_isotropic_kernel_is_rotation_invariant_and_sums_to_one():
    k = gaussian_kernel(15, 1.7)
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    np.testing.assert_allclose(k, np.rot90(k), atol=1e-15)
    for kern in (k, generalized_gaussian_kernel(13, 2, 1, 0.3, 0.7),
                 plateau_kernel(13, 2, 1, 0.3, 1.5), sinc_kernel(13, 1.0), pulse_kernel(5)):
        assert kern.sum() == pytest.approx(1.0)


def test_generalized_beta_controls_tails():
    heavy = generalized_gaussian_kernel(21, 2, 2, 0, 0.5)
    flat = generalized_gaussian_kernel(21, 2, 2, 0, 4.0)
    # beta < 1 puts more mass far out than beta > 1
    assert heavy[10, 0] > 100 * flat[10, 0]
    np.testing.assert_allclose(generalized_gaussian_kernel(21, 2, 2, 0, 1.0),
                               gaussian_kernel(21, 2.0), atol=1e-14)


def test_sinc_kernel_is_a_low_pass_with_its_cutoff():
    k = sinc_kernel(21, math.pi / 2)
    resp = np.abs(np.fft.fftshift(np.fft.fft2(k, (256, 256))))
    freqs = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi      # rad/pixel
    row = resp[128]
    low = row[np.abs(freqs) < 0.3 * math.pi]
    high = row[np.abs(freqs) > 0.75 * math.pi]
    assert low.min() > 0.85 and high.max() < 0.15


def test_random_kernel_type_frequencies_follow_the_spec():
    spec = KernelSpec()
    rng = np.random.default_rng(0)
    n = 4000
    kinds = [random_kernel(rng, spec).kind for _ in range(n)]
    sinc = kinds.count("sinc") / n
    assert abs(sinc - spec.sinc_prob) < 4 * math.sqrt(0.1 * 0.9 / n)
    others = [k for k in kinds if k != "sinc"]
    for name, p in zip(KERNEL_TYPES, spec.type_probs):
        got = others.count(name) / len(others)
        assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / len(others)) + 1e-9, name


def test_random_kernel_sizes_and_sigmas_stay_in_range():
    spec = KernelSpec(sizes=(3, 5, 7), sigma_range=(0.2, 1.5))
    rng = np.random.default_rng(1)
    draws = [random_kernel(rng, spec) for _ in range(600)]
    sizes = [d.kernel.shape[0] for d in draws]
    assert set(sizes) == {3, 5, 7}
    assert all(abs(sizes.count(s) / 600 - 1 / 3) < 0.07 for s in (3, 5, 7))
    sig = [d.params["sigma_x"] for d in draws if d.kind != "sinc"]
    assert 0.2 <= min(sig) and max(sig) <= 1.5
    assert abs(np.mean(sig) - 0.85) < 0.06                 # uniform mean
    for d in draws:
        if d.kind.endswith("_iso") or d.kind == "iso":
            assert d.params["sigma_x"] == d.params["sigma_y"] and d.params["theta"] == 0.0


def test_same_seed_same_kernel():
    a = random_kernel(np.random.default_rng(5))
    b = random_kernel(np.random.default_rng(5))
    np.testing.assert_array_equal(a.kernel, b.kernel)


def test_final_sinc_probability():
    rng = np.random.default_rng(2)
    kinds = [random_final_sinc(rng, 0.8, range(7, 22, 2)).kind for _ in range(2000)]
    assert abs(kinds.count("sinc") / 2000 - 0.8) < 0.04
    assert set(kinds) == {"sinc", "pulse"}


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        KernelSpec(type_probs=(0.5, 0.5, 0.5, 0, 0, 0))
