"""Seeded degradations for training and evaluation.

Every transform takes an HxWx3 float32 image in [0, 1] and an explicit
``numpy.random.Generator`` (the same seed gives the same output) and returns float32
in [0, 1]. SR degradations shrink by their scale; the others keep the size.

Named degradations (``get_degradation(name)`` -> ``Degradation``) are what configs
and ``resshift eval --degradation`` refer to:

=================  ======  ====================================================
name               scale   what
=================  ======  ====================================================
realesrgan         4       ResShift's Real-ESRGAN training pipeline (two stages)
realesrgan_basicsr 4       Real-ESRGAN's own (always two stages, kernels 7..21)
resshift_test      4       the paper's milder test-set synthesis
bicubic            4       antialiased bicubic x4 only
face               1       GFPGAN face degradation (training ranges, eq. 28)
face_test          1       the CelebA test-set face degradation
blur               1       Gaussian or motion blur (+ light noise), deblurring
=================  ======  ====================================================

A config may also name a **mixture**, ``{name: weight, ...}`` (YAML mapping): each sample
draws one of the named degradations with probability proportional to its weight (all of
one scale), so one model learns heavy, mild and clean inputs at once.

Inpainting masks live in ``model.degradations.masks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Union

import numpy as np

from .blur import BlurSpec, blur_degrade
from .face import FACE_TEST, FACE_TRAIN, face_degrade
from .realesrgan import BASICSR_TRAIN, RESSHIFT_TEST, RESSHIFT_TRAIN, realesrgan_degrade
from .simple import bicubic_degrade

DegradeFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Degradation:
    """A named degradation: ``fn(gt, rng) -> lq`` with ``lq`` 1/scale of ``gt``'s size."""

    name: str
    scale: int
    fn: DegradeFn
    description: str

    def __call__(self, gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.fn(gt, rng)


DEGRADATIONS: dict[str, Degradation] = {d.name: d for d in (
    Degradation("realesrgan", 4, lambda g, r: realesrgan_degrade(g, r, RESSHIFT_TRAIN),
                "ResShift's Real-ESRGAN training degradation (second stage w.p. 0.5)"),
    Degradation("realesrgan_basicsr", 4, lambda g, r: realesrgan_degrade(g, r, BASICSR_TRAIN),
                "Real-ESRGAN's BasicSR degradation (always two stages)"),
    Degradation("resshift_test", 4, lambda g, r: realesrgan_degrade(g, r, RESSHIFT_TEST),
                "the paper's test-set synthesis (one mild Real-ESRGAN stage)"),
    Degradation("bicubic", 4, lambda g, r: bicubic_degrade(g, r, 4), "bicubic x4 only"),
    Degradation("face", 1, lambda g, r: face_degrade(g, r, FACE_TRAIN),
                "GFPGAN face degradation, training ranges"),
    Degradation("face_test", 1, lambda g, r: face_degrade(g, r, FACE_TEST),
                "face degradation of the CelebA test set"),
    Degradation("blur", 1, lambda g, r: blur_degrade(g, r, BlurSpec()),
                "Gaussian or motion blur with light noise (deblurring)"),
)}


DegradationSpec = Union[str, Mapping[str, float]]


def _named(name: str) -> Degradation:
    try:
        return DEGRADATIONS[name]
    except KeyError:
        raise ValueError(f"unknown degradation {name!r}; choose from "
                         f"{', '.join(sorted(DEGRADATIONS))}") from None


def mixture(weights: Mapping[str, float]) -> Degradation:
    """One degradation drawn per sample from ``weights`` (name -> weight > 0)."""
    if not weights:
        raise ValueError("a degradation mixture needs at least one name: weight entry")
    parts = [_named(str(n)) for n in weights]
    w = np.array([float(v) for v in weights.values()], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"degradation mixture weights must be positive numbers, got {dict(weights)}")
    scales = {d.scale for d in parts}
    if len(scales) != 1:
        raise ValueError(f"a degradation mixture must keep one scale, got "
                         f"{ {d.name: d.scale for d in parts} }")
    probs = w / w.sum()

    def degrade(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return parts[int(rng.choice(len(parts), p=probs))](gt, rng)

    label = "+".join(f"{d.name}:{p:.2f}" for d, p in zip(parts, probs))
    return Degradation(label, scales.pop(), degrade, f"per-sample mixture of {label}")


def parse_mixture(label: str) -> dict[str, float]:
    """``"a:0.3+b:0.7"`` (the label a mixture carries, as ``model.json`` records it) ->
    ``{"a": 0.3, "b": 0.7}``."""
    weights: dict[str, float] = {}
    for part in label.split("+"):
        name, _, weight = part.partition(":")
        if name.strip() in weights:
            raise ValueError(f"degradation mixture {label!r} names {name.strip()!r} twice")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"cannot read degradation mixture {label!r}: write it as "
                             "name:weight+name:weight, e.g. realesrgan:0.3+bicubic:0.7") from None
    return weights


def get_degradation(spec: DegradationSpec) -> Degradation:
    """A named degradation, or a mixture given as ``{name: weight}`` or as its label
    ``"name:weight+name:weight"``."""
    if isinstance(spec, Mapping):
        return mixture(spec)
    if isinstance(spec, str) and (":" in spec or "+" in spec):
        return mixture(parse_mixture(spec))
    return _named(spec)


__all__ = ["Degradation", "DegradationSpec", "DEGRADATIONS", "get_degradation", "mixture"]
