"""Blur kernels of the Real-ESRGAN family, and the random choice among them.

Every kernel is a float64 ``size x size`` array (``size`` odd) that sums to 1, centred
on the middle pixel. With ``x`` the offset from the centre and the covariance
``Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``:

* Gaussian:              k(x) ~ exp(-1/2 x^T Sigma^-1 x)
* generalized Gaussian:  k(x) ~ exp(-1/2 (x^T Sigma^-1 x)^beta)
* plateau:               k(x) ~ 1 / (1 + (x^T Sigma^-1 x)^beta)
* 2-D sinc (ideal circular low-pass of cutoff omega in rad/pixel):
                         k(r) ~ omega J1(omega r) / (2 pi r), k(0) = omega^2 / (4 pi)

``random_kernel`` draws one of them with the probabilities and ranges of
``KernelSpec`` (defaults: kernel 1 of ResShift's Real-ESRGAN training recipe, the
first-order blur of Wang et al., Real-ESRGAN, 2021, section 3.1).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso",
                     "plateau_iso", "plateau_aniso"]
KERNEL_TYPES: tuple[KernelType, ...] = ("iso", "aniso", "generalized_iso", "generalized_aniso",
                                        "plateau_iso", "plateau_aniso")


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")


def _offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)          # xx: column offset, yy: row offset
    return xx, yy


def mahalanobis_sq(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x over the kernel grid, Sigma rotated by ``theta`` (radians)."""
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    xx, yy = _offsets(size)
    c, s = math.cos(theta), math.sin(theta)
    # coordinates in the kernel's principal axes
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalise(k: np.ndarray) -> np.ndarray:
    return k / k.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None,
                    theta: float = 0.0) -> np.ndarray:
    """Bivariate (an)isotropic Gaussian; ``sigma_y=None`` makes it isotropic."""
    d2 = mahalanobis_sq(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(np.exp(-0.5 * d2))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                                beta: float) -> np.ndarray:
    """exp(-1/2 (x^T Sigma^-1 x)^beta): beta < 1 heavier tails, beta > 1 flatter top."""
    d2 = mahalanobis_sq(size, sigma_x, sigma_y, theta)
    return _normalise(np.exp(-0.5 * d2 ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                   beta: float) -> np.ndarray:
    """1 / (1 + (x^T Sigma^-1 x)^beta): a flat top with polynomial tails."""
    d2 = mahalanobis_sq(size, sigma_x, sigma_y, theta)
    return _normalise(1.0 / (1.0 + d2 ** beta))


@functools.lru_cache(maxsize=4)
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)


def bessel_j1(x: np.ndarray, nodes: int = 128) -> np.ndarray:
    """Bessel function of the first kind, order 1, for x >= 0 (numpy only).

    J1(x) = 1/pi * integral_0^pi cos(tau - x sin tau) d tau, by Gauss-Legendre
    quadrature; exact to ~1e-12 for the arguments kernels use (x < 100).
    """
    x = np.asarray(x, dtype=np.float64)
    t, w = _legendre(nodes)
    tau = 0.5 * math.pi * (t + 1.0)
    vals = np.cos(tau[None, :] - x.reshape(-1, 1) * np.sin(tau)[None, :])
    return ((vals @ w) * 0.5).reshape(x.shape)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """2-D circular low-pass (sinc) kernel with cutoff ``omega`` in rad/pixel (0, pi]."""
    _check_size(size)
    if not 0 < cutoff <= math.pi + 1e-9:
        raise ValueError(f"sinc cutoff must be in (0, pi], got {cutoff}")
    xx, yy = _offsets(size)
    r = np.hypot(xx, yy)
    safe = np.where(r == 0, 1.0, r)
    k = cutoff * bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    k[r == 0] = cutoff ** 2 / (4 * math.pi)
    return _normalise(k)


def pulse_kernel(size: int) -> np.ndarray:
    """The identity kernel (a single 1 in the middle)."""
    _check_size(size)
    k = np.zeros((size, size))
    k[size // 2, size // 2] = 1.0
    return k


def split_beta(rng: np.random.Generator, low: float, high: float) -> float:
    """Draw a shape parameter: with probability 1/2 from U(low, 1), else U(1, high),
    when the range straddles 1 (as the reference does); otherwise U(low, high)."""
    if low < 1.0 < high:
        return float(rng.uniform(low, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, high))
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class KernelSpec:
    """How to draw one random blur kernel (defaults: ResShift's kernel 1).

    sizes: odd kernel sizes to choose from uniformly (ResShift: ``range(3, 21, 2)``).
    sinc_prob: probability of a sinc kernel instead of a mixed Gaussian-like one;
        its cutoff is U(pi/3, pi) for sizes < 13 and U(pi/5, pi) otherwise.
    type_probs: probability of each of ``KERNEL_TYPES`` (same order).
    sigma_range / rotation_range / beta ranges: as in degradations.md.
    """

    sizes: tuple[int, ...] = tuple(range(3, 21, 2))
    sinc_prob: float = 0.1
    type_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sigma_range: tuple[float, float] = (0.2, 3.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)

    def __post_init__(self):
        if len(self.type_probs) != len(KERNEL_TYPES):
            raise ValueError(f"type_probs needs {len(KERNEL_TYPES)} entries ({KERNEL_TYPES})")
        if abs(sum(self.type_probs) - 1.0) > 1e-6:
            raise ValueError(f"type_probs must sum to 1, got {sum(self.type_probs)}")
        for s in self.sizes:
            _check_size(s)


@dataclass(frozen=True)
class DrawnKernel:
    """A kernel and how it was drawn (for logging and tests)."""

    kernel: np.ndarray
    kind: str                      # one of KERNEL_TYPES, "sinc" or "pulse"
    params: dict = field(default_factory=dict)


def mixed_kernel(rng: np.random.Generator, size: int, spec: KernelSpec) -> DrawnKernel:
    """One of the six Gaussian-like kernels, drawn with ``spec.type_probs``."""
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(spec.type_probs)))]
    iso = kind.endswith("iso") and not kind.endswith("aniso")
    sx = float(rng.uniform(*spec.sigma_range))
    if iso:
        sy, theta = sx, 0.0
    else:
        sy = float(rng.uniform(*spec.sigma_range))
        theta = float(rng.uniform(*spec.rotation_range))
    params = {"sigma_x": sx, "sigma_y": sy, "theta": theta, "size": size}
    if kind.startswith("generalized"):
        beta = split_beta(rng, *spec.betag_range)
        return DrawnKernel(generalized_gaussian_kernel(size, sx, sy, theta, beta), kind,
                           {**params, "beta": beta})
    if kind.startswith("plateau"):
        beta = split_beta(rng, *spec.betap_range)
        return DrawnKernel(plateau_kernel(size, sx, sy, theta, beta), kind,
                           {**params, "beta": beta})
    return DrawnKernel(gaussian_kernel(size, sx, sy, theta), kind, params)


def random_kernel(rng: np.random.Generator, spec: KernelSpec = KernelSpec()) -> DrawnKernel:
    """Kernel 1/2 of the Real-ESRGAN recipe: size uniform over ``spec.sizes``, then a
    sinc kernel with ``spec.sinc_prob``, else a mixed Gaussian-like kernel."""
    size = int(rng.choice(np.asarray(spec.sizes)))
    if rng.uniform() < spec.sinc_prob:
        lo = math.pi / 3 if size < 13 else math.pi / 5
        cutoff = float(rng.uniform(lo, math.pi))
        return DrawnKernel(sinc_kernel(size, cutoff), "sinc", {"cutoff": cutoff, "size": size})
    return mixed_kernel(rng, size, spec)


def random_final_sinc(rng: np.random.Generator, prob: float,
                      sizes: Sequence[int]) -> DrawnKernel:
    """The last stage's kernel: with ``prob`` a sinc of cutoff U(pi/3, pi), else a pulse."""
    size = int(rng.choice(np.asarray(sizes)))
    if rng.uniform() < prob:
        cutoff = float(rng.uniform(math.pi / 3, math.pi))
        return DrawnKernel(sinc_kernel(size, cutoff), "sinc", {"cutoff": cutoff, "size": size})
    return DrawnKernel(pulse_kernel(1), "pulse", {"size": 1})
