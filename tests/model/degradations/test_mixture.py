"""Degradation mixtures: one named degradation drawn per sample, by weight."""

import numpy as np
import pytest

from model.degradations import get_degradation


def _gt(seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (32, 32, 3)).astype(np.float32)


def test_mixture_draws_each_part_by_weight_and_is_seeded():
    mix = get_degradation({"bicubic": 3, "resshift_test": 1})
    assert mix.scale == 4 and mix.name == "bicubic:0.75+resshift_test:0.25"
    bicubic = get_degradation("bicubic")
    gt, hits = _gt(), 0
    for seed in range(200):
        out = mix(gt, np.random.default_rng(seed))
        assert out.shape == (8, 8, 3)
        # the part is drawn first from the same generator: replay it to see which ran
        rng = np.random.default_rng(seed)
        if rng.choice(2, p=[0.75, 0.25]) == 0:
            hits += 1
            np.testing.assert_array_equal(out, bicubic(gt, rng))
    assert 130 <= hits <= 170                        # ~150 of 200 draws are bicubic
    np.testing.assert_array_equal(mix(gt, np.random.default_rng(5)),
                                  mix(gt, np.random.default_rng(5)))


@pytest.mark.parametrize("spec, match", [
    ({}, "at least one"), ({"bicubic": 0}, "positive"), ({"bicubic": float("nan")}, "positive"),
    ({"nope": 1}, "unknown degradation"), ({"bicubic": 1, "face": 1}, "one scale"),
])
def test_bad_mixtures_say_what_to_fix(spec, match):
    with pytest.raises(ValueError, match=match):
        get_degradation(spec)


def test_a_mixture_label_reads_back_as_the_same_mixture():
    # model.json records a mixture by its label; `resshift eval` degrades with it again
    mix = get_degradation({"realesrgan": 0.3, "resshift_test": 0.55, "bicubic": 0.15})
    again = get_degradation(mix.name)
    assert again.name == mix.name == "realesrgan:0.30+resshift_test:0.55+bicubic:0.15"
    gt = _gt()
    for seed in range(5):
        np.testing.assert_array_equal(again(gt, np.random.default_rng(seed)),
                                      mix(gt, np.random.default_rng(seed)))


@pytest.mark.parametrize("label, match", [
    ("bicubic:x+blur:1", "name:weight"), ("bicubic+blur", "name:weight"),
    ("bicubic:1+nope:1", "unknown degradation"), ("bicubic:0+blur:1", "positive"),
    ("bicubic:1+bicubic:2", "twice"),
])
def test_bad_mixture_labels_say_what_to_fix(label, match):
    with pytest.raises(ValueError, match=match):
        get_degradation(label)
