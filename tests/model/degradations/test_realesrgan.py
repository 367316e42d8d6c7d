"""The Real-ESRGAN pipeline: shapes, determinism, and how often each branch fires."""

from collections import Counter

import numpy as np
import pytest

from model.degradations import DEGRADATIONS, get_degradation
from model.degradations.realesrgan import (BASICSR_TRAIN, RESSHIFT_TEST, RESSHIFT_TRAIN,
                                           DegradationTrace, realesrgan_degrade)


def _photo(h=64, w=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5.0 + c) * np.cos(yy / 7.0 - c) for c in range(3)], -1)
    return np.clip(0.5 + 0.3 * base + rng.normal(0, 0.03, (h, w, 3)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def traces():
    """300 seeded runs of the training pipeline on a small image, with their traces."""
    out = []
    img = _photo(32, 32)
    for i in range(300):
        tr = DegradationTrace()
        lq = realesrgan_degrade(img, np.random.default_rng(i), RESSHIFT_TRAIN, tr)
        out.append((lq, tr))
    return out


def test_output_is_quarter_size_on_the_8bit_grid(traces):
    for lq, _ in traces[:20]:
        assert lq.shape == (8, 8, 3) and lq.dtype == np.float32
        np.testing.assert_allclose(lq * 255, np.round(lq * 255), atol=1e-4)
        assert lq.min() >= 0 and lq.max() <= 1


def test_same_seed_same_lq_and_other_seed_differs():
    img = _photo()
    a = realesrgan_degrade(img, np.random.default_rng(3))
    b = realesrgan_degrade(img, np.random.default_rng(3))
    c = realesrgan_degrade(img, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_second_stage_fires_half_the_time(traces):
    frac = sum("noise2" in tr.names() for _, tr in traces) / len(traces)
    assert abs(frac - 0.5) < 0.1
    # with the second stage, its blur fires with probability 0.8
    second = [tr for _, tr in traces if "noise2" in tr.names()]
    blur2 = sum("blur2" in tr.names() for tr in second) / len(second)
    assert abs(blur2 - 0.8) < 0.12


def test_first_resize_choice_frequencies(traces):
    kinds = Counter(dict(tr.steps)["resize1"]["kind"] for _, tr in traces)
    for kind, p in zip(("up", "down", "keep"), RESSHIFT_TRAIN.stage1.resize_probs):
        assert abs(kinds[kind] / len(traces) - p) < 0.08, (kind, kinds)
    factors = [dict(tr.steps)["resize1"]["factor"] for _, tr in traces]
    assert 0.15 <= min(factors) and max(factors) <= 1.5


def test_jpeg_qualities_and_final_order(traces):
    q1 = [dict(tr.steps)["jpeg1"]["quality"] for _, tr in traces]
    q2 = [dict(tr.steps)["jpeg2"]["quality"] for _, tr in traces]
    assert 30 <= min(q1) and max(q1) <= 95 and 30 <= min(q2) and max(q2) <= 95
    assert abs(np.mean(q1) - 62.5) < 3
    sinc_first = sum(tr.names().index("final_resize") < tr.names().index("jpeg2")
                     for _, tr in traces) / len(traces)
    assert abs(sinc_first - 0.5) < 0.1


def test_kernel_sizes_are_resshifts(traces):
    sizes = {dict(tr.steps)["blur1"]["size"] for _, tr in traces}
    assert sizes <= set(range(3, 21, 2)) and len(sizes) >= 7
    assert max(RESSHIFT_TRAIN.kernel2.sizes) == 13 and min(BASICSR_TRAIN.kernel1.sizes) == 7


def test_test_degradation_is_one_stage_and_milder():
    img = _photo(64, 64, seed=1)
    runs = []
    for i in range(60):
        tr = DegradationTrace()
        lq = realesrgan_degrade(img, np.random.default_rng(i), RESSHIFT_TEST, tr)
        runs.append((lq, tr))
        assert "noise2" not in tr.names()
        assert 70 <= dict(tr.steps)["jpeg1"]["quality"] <= 95
        assert 80 <= dict(tr.steps)["jpeg2"]["quality"] <= 100
        assert dict(tr.steps)["blur1"]["kind"] in ("iso", "aniso")
    # mean colour is kept (no shift), and the test pipeline distorts less than training
    ref = img.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    err_test = np.mean([np.abs(lq - ref).mean() for lq, _ in runs])
    err_train = np.mean([np.abs(realesrgan_degrade(img, np.random.default_rng(i)) - ref).mean()
                         for i in range(60)])
    assert err_test < err_train
    assert all(abs(lq.mean() - img.mean()) < 0.05 for lq, _ in runs)


def test_registry_names_and_scales():
    img = _photo(64, 64)
    for name, deg in DEGRADATIONS.items():
        out = deg(img, np.random.default_rng(0))
        assert out.shape == (64 // deg.scale, 64 // deg.scale, 3), name
    with pytest.raises(ValueError, match="unknown degradation"):
        get_degradation("nope")


def test_bicubic_is_deterministic_and_keeps_flat_images_flat():
    deg = get_degradation("bicubic")
    flat = np.full((64, 64, 3), 0.4, np.float32)
    np.testing.assert_allclose(deg(flat, np.random.default_rng(0)), np.round(0.4 * 255) / 255,
                               atol=1e-6)
    img = _photo()
    np.testing.assert_array_equal(deg(img, np.random.default_rng(0)),
                                  deg(img, np.random.default_rng(1)))
