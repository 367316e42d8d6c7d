"""Face degradation and deblurring blur: sizes, ranges, and statistics."""

import math

import numpy as np

from model.degradations.blur import BlurSpec, blur_degrade, motion_kernel
from model.degradations.face import FACE_TEST, FACE_TRAIN, face_degrade_pair


def _face(size=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.3 * np.sin(12 * xx + c) * np.cos(9 * yy) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def _hf_energy(img):
    return float(np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean())


def test_face_degradation_keeps_the_size_and_draws_in_range():
    img = _face()
    params = []
    for i in range(80):
        pair = face_degrade_pair(img, np.random.default_rng(i), FACE_TRAIN)
        assert pair.lq.shape == img.shape and pair.gt.shape == img.shape
        params.append(pair.params)
    s = [p["downsample"] for p in params]
    assert 0.8 <= min(s) and max(s) <= 32
    assert all(0.1 <= p["sigma_x"] <= 15 for p in params)
    assert all(30 <= p["jpeg"] <= 100 and 0 <= p["noise"] <= 20 for p in params)
    kinds = [p["kernel"] for p in params]
    assert 0.3 < kinds.count("iso") / len(kinds) < 0.7


def test_face_gray_branch_makes_lq_and_gt_gray():
    spec = FACE_TRAIN.__class__(gray_prob=1.0)
    pair = face_degrade_pair(_face(), np.random.default_rng(0), spec)
    assert pair.params["gray"]
    for x in (pair.lq, pair.gt):
        np.testing.assert_allclose(x[..., 0], x[..., 1], atol=1e-6)


def test_face_test_set_is_anisotropic_with_its_ranges():
    for i in range(30):
        p = face_degrade_pair(_face(64), np.random.default_rng(i), FACE_TEST).params
        assert p["kernel"] == "aniso" and 4 <= p["sigma_x"] <= 16 and 0 <= p["theta"] <= math.pi
        assert 30 <= p["jpeg"] <= 70 and 1 <= p["downsample"] <= 32 and not p["gray"]


def test_motion_kernel_is_a_normalised_line_of_the_length():
    k = motion_kernel(11.0, 0.0)
    assert k.sum() == np.float64(1.0) or abs(k.sum() - 1) < 1e-12
    row = k.sum(axis=0)
    support = np.flatnonzero(row > 1e-3)
    assert 10 <= support[-1] - support[0] + 1 <= 13
    assert k.sum(axis=1)[k.shape[0] // 2] > 0.99      # horizontal: all mass on the middle row
    diag = motion_kernel(11.0, math.pi / 4)
    assert abs(diag.sum() - 1) < 1e-12 and np.allclose(diag, diag[::-1, ::-1])


def test_blur_degradation_removes_detail_and_is_seeded():
    img = _face()
    outs = [blur_degrade(img, np.random.default_rng(i), BlurSpec()) for i in range(20)]
    assert all(o.shape == img.shape for o in outs)
    assert np.mean([_hf_energy(o) for o in outs]) < 0.7 * _hf_energy(img)
    np.testing.assert_array_equal(blur_degrade(img, np.random.default_rng(3)),
                                  blur_degrade(img, np.random.default_rng(3)))
