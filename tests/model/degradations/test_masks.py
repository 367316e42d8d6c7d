"""LaMa-style masks: shapes, the documented ranges, and generator frequencies."""

from collections import Counter

import numpy as np
import pytest

from model.degradations import masks as M


def _boxes(mask):
    """Bounding boxes of the connected True runs when boxes do not touch (rows x cols)."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return rows, cols


def test_every_generator_gives_a_bool_mask_of_the_shape():
    rng = np.random.default_rng(0)
    for name, fn in M.MASK_GENERATORS.items():
        m = fn((256, 200), rng)
        assert m.shape == (256, 200) and m.dtype == bool, name
        assert m.any(), name


def test_box_mask_keeps_the_margin_and_sizes():
    rng = np.random.default_rng(1)
    for _ in range(200):
        m = M.box_mask((256, 256), rng, margin=10, min_times=1, max_times=1)
        rows, cols = _boxes(m)
        assert rows.min() >= 10 and rows.max() < 246 and cols.min() >= 10 and cols.max() < 246
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert 30 <= h < 150 and 30 <= w < 150
        assert m.sum() == h * w                       # one solid rectangle


def test_irregular_mask_coverage_statistics():
    rng = np.random.default_rng(2)
    cover = [M.irregular_mask((256, 256), rng).mean() for _ in range(200)]
    # wide strokes (5..104 px) of 1-5 x 1-5 segments: coverage spreads widely
    assert 0.05 < np.median(cover) < 0.7
    assert min(cover) > 0 and max(cover) <= 1
    thin = [M.irregular_mask((256, 256), rng, max_width=10, max_len=40).mean() for _ in range(100)]
    assert np.mean(thin) < 0.25 * np.mean(cover)


def test_draw_segment_width():
    m = np.zeros((50, 50), bool)
    M.draw_segment(m, (10.0, 25.0), (40.0, 25.0), 9)
    assert m[25, 10:41].all() and m[21:30, 25].all()
    assert not m[19, 25] and not m[31, 25]


def test_outpainting_masks_touch_a_border_and_bands_stay_in_range():
    rng = np.random.default_rng(3)
    for _ in range(200):
        m = M.outpainting_mask((200, 200), rng)
        assert m[0].all() or m[-1].all() or m[:, 0].all() or m[:, -1].all()
        # each band at most 25% of the side
        assert (~m[100, :]).sum() >= 200 - 2 * 50 or (~m[:, 100]).sum() >= 200 - 2 * 50


def test_expand_mask_keeps_the_expected_area():
    m = M.expand_mask((200, 100), np.random.default_rng(4), masking_percent=0.25)
    assert (~m).sum() == 150 * 75
    assert not m[100, 50] and m[0, 0]
    off = M.expand_mask((200, 100), np.random.default_rng(5), masking_percent=0.5, center=False)
    assert (~off).sum() == 100 * 50
    with pytest.raises(ValueError):
        M.expand_mask((10, 10), np.random.default_rng(0), masking_percent=0.99)


def test_half_mask_fractions_and_frequencies():
    rng = np.random.default_rng(6)
    fracs = Counter()
    for _ in range(400):
        m = M.half_mask((100, 100), rng, p=0.25)
        assert m.mean() == pytest.approx(0.75)
        kind = ("rows" if m.all(1).any() and not m.all(0).any() else "cols",
                bool(m[0, 0]))
        fracs[kind] += 1
    assert len(fracs) == 4 and all(60 < c < 140 for c in fracs.values())


def test_mixed_mask_picks_generators_evenly_and_seeds_repeat():
    spec = M.MixedMaskSpec()
    a = M.mixed_mask((128, 128), np.random.default_rng(7), spec)
    b = M.mixed_mask((128, 128), np.random.default_rng(7), spec)
    np.testing.assert_array_equal(a, b)
    inv = M.MixedMaskSpec(weights=(("box", 1.0),), invert_prob=1.0)
    m = M.mixed_mask((128, 128), np.random.default_rng(8), inv)
    assert m.mean() > 0.5                 # inverted box: most of the image is masked
    with pytest.raises(ValueError, match="unknown mask"):
        M.mixed_mask((64, 64), np.random.default_rng(0), M.MixedMaskSpec(weights=(("x", 1),)))
