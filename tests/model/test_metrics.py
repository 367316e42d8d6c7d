"""PSNR / SSIM against closed-form values and scikit-image."""

import math

import numpy as np
import pytest

from model.metrics import all_metrics, psnr, rgb_to_y, ssim


def _img(seed=0, shape=(48, 64, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_psnr_of_a_known_error():
    a = np.full((10, 10, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2))   # MSE 1: 48.13 dB
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert psnr(a, a) == math.inf
    # floats in [0, 1] are the same images
    assert psnr(a / 255.0, (a + 1) / 255.0) == pytest.approx(48.1308036, abs=1e-6)


def test_crop_border_ignores_the_frame():
    a = np.full((20, 20, 3), 50, np.uint8)
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert psnr(a, b, crop_border=4) == math.inf
    assert psnr(a, b) < 20
    with pytest.raises(ValueError, match="crop_border"):
        psnr(a, b, crop_border=10)


def test_y_channel_matches_bt601():
    white = np.full((1, 1, 3), 255, np.uint8).astype(np.float64)
    black = np.zeros((1, 1, 3))
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    a, b = _img(1), _img(2)
    ya, yb = rgb_to_y(a.astype(np.float64)), rgb_to_y(b.astype(np.float64))
    expected = 10 * math.log10(255 ** 2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, y_channel=True) == pytest.approx(expected)


def test_ssim_closed_forms():
    a = _img(3)
    assert ssim(a, a) == pytest.approx(1.0)
    # constant images: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = (0.01 * 255) ** 2
    x = np.full((32, 32), 100, np.uint8)
    y = np.full((32, 32), 150, np.uint8)
    assert ssim(x, y) == pytest.approx((2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1))


def test_ssim_and_psnr_match_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    a = _img(4, (64, 80, 3))
    b = np.clip(a.astype(int) + np.random.default_rng(5).normal(0, 12, a.shape), 0, 255
                ).astype(np.uint8)
    ref = skm.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-10)
    assert psnr(a, b) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=255))


def test_all_metrics_and_shape_errors():
    a, b = _img(6), _img(7)
    m = all_metrics(a, b, crop_border=4)
    assert set(m) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert m["psnr_y"] > m["psnr"]          # luma averages the channel errors
    with pytest.raises(ValueError, match="shape"):
        psnr(a, b[:10])
