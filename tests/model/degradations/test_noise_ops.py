"""Noise statistics and the deterministic operations (filter, resize, JPEG)."""

import numpy as np
import pytest

from model.degradations.noise import NoiseSpec, gaussian_noise, poisson_noise, random_noise
from model.degradations.ops import bicubic_upsample, filter2d, jpeg, quantize, resize
from model.degradations.kernels import gaussian_kernel, pulse_kernel


def _flat(v=0.5, size=128):
    return np.full((size, size, 3), v, np.float32)


def test_gaussian_noise_has_the_requested_sigma_and_gray_is_channel_shared():
    rng = np.random.default_rng(0)
    out = gaussian_noise(_flat(), 10 / 255, False, rng)
    d = out - 0.5
    assert abs(d.std() * 255 - 10) < 0.3 and abs(d.mean()) < 0.002
    # colour noise: channels independent
    assert abs(np.corrcoef(d[..., 0].ravel(), d[..., 1].ravel())[0, 1]) < 0.05
    gray = gaussian_noise(_flat(), 10 / 255, True, rng) - 0.5
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_noise_is_clipped_to_the_unit_range():
    out = gaussian_noise(_flat(0.99), 0.2, False, np.random.default_rng(1))
    assert out.min() >= 0 and out.max() <= 1


def test_poisson_noise_variance_grows_with_intensity():
    rng = np.random.default_rng(2)
    img = np.zeros((128, 256, 3), np.float32)
    img[:, :128] = 0.1
    img[:, 128:] = 0.4
    scale = 0.2
    d = poisson_noise(img, scale, False, rng) - img
    # two distinct values -> vals = 2; Var = scale^2 * v / vals (little clipping here)
    v_lo, v_hi = d[:, :128].var(), d[:, 128:].var()
    assert v_lo == pytest.approx(scale ** 2 * 0.1 / 2, rel=0.1)
    assert v_hi == pytest.approx(scale ** 2 * 0.4 / 2, rel=0.1)
    assert abs(d.mean()) < 0.01


def test_poisson_gray_noise_is_channel_shared():
    img = np.random.default_rng(3).uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    d = poisson_noise(img, 0.5, True, np.random.default_rng(4)) - img
    inside = (img > 0.25) & (img < 0.75)          # away from clipping
    same = np.isclose(d[..., 0], d[..., 1], atol=1e-6) | ~(inside[..., 0] & inside[..., 1])
    assert same.all()


def test_random_noise_picks_gaussian_with_its_probability():
    spec = NoiseSpec(gaussian_prob=0.5, sigma_range=(20, 20), poisson_range=(0.05, 0.05))
    rng = np.random.default_rng(5)
    stds = [float((random_noise(_flat(size=32), spec, rng) - 0.5).std() * 255) for _ in range(400)]
    gaussian = sum(s > 10 for s in stds) / 400        # sigma 20 vs tiny Poisson
    assert abs(gaussian - 0.5) < 0.1


def test_filter_with_pulse_is_identity_and_blur_preserves_the_mean():
    img = np.random.default_rng(6).uniform(0, 1, (40, 50, 3)).astype(np.float32)
    np.testing.assert_allclose(filter2d(img, pulse_kernel(5)), img, atol=1e-6)
    blurred = filter2d(img, gaussian_kernel(9, 2.0))
    assert blurred.shape == img.shape
    assert abs(blurred.mean() - img.mean()) < 0.01 and blurred.std() < 0.5 * img.std()


def test_resize_modes_and_sizes():
    img = np.random.default_rng(7).uniform(0, 1, (40, 60, 3)).astype(np.float32)
    for mode in ("area", "bilinear", "bicubic"):
        assert resize(img, (10, 15), mode).shape == (10, 15, 3)
    assert resize(img, (0, 0), "area").shape == (1, 1, 3)
    up = bicubic_upsample(quantize(img[:8, :8]), 4)
    assert up.shape == (32, 32, 3) and up.min() >= 0 and up.max() <= 1


def test_jpeg_quality_orders_the_error():
    rng = np.random.default_rng(8)
    img = filter2d(rng.uniform(0, 1, (64, 64, 3)).astype(np.float32), gaussian_kernel(5, 1.0))
    err = [float(np.abs(jpeg(img, q) - img).mean()) for q in (30, 70, 95)]
    assert err[0] > err[1] > err[2]
    assert jpeg(img, 90).dtype == np.float32
