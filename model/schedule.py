"""Residual-shift noise schedules and the Gaussian posterior, as pure functions.

ResShift's forward process (NeurIPS 2023, eq. 1-2) moves the clean latent x_0 towards
the degraded latent y_0 by the residual e_0 = y_0 - x_0:

    q(x_t | x_0, y_0) = N(x_t; x_0 + eta_t * e_0, kappa^2 * eta_t * I)

with eta_1 -> 0 and eta_T -> 1. Two ways of choosing eta_t exist:

* ``"paper"`` (eq. 9-10 of the NeurIPS paper): eta_1 = min((0.04 / kappa)^2, 0.001),
  eta_T = 0.999, and sqrt(eta_t) = sqrt(eta_1) * b0^beta_t with
  beta_t = ((t-1)/(T-1))^p * (T-1) and b0 = exp(log(eta_T / eta_1) / (2 (T-1))).
* ``"exponential"`` (the released code): the same geometric law on sqrt(eta), but the
  ends are sqrt_eta_1 = min(min_noise_level / kappa, min_noise_level) and
  sqrt_eta_T = etas_end (0.99: the *square root* of eta_T, unlike the paper).

Everything here takes numbers and returns float64 numpy arrays; no network, no torch.
Timesteps are 0-based indices 0..T-1 (index i holds eta_{i+1}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

ScheduleName = Literal["exponential", "paper"]


def geometric_sqrt_etas(steps: int, sqrt_eta_first: float, sqrt_eta_last: float,
                        power: float) -> np.ndarray:
    """sqrt(eta_t) for t = 1..T on the power-warped geometric law (eq. 10).

    sqrt_eta_t = sqrt_eta_1 * b^(((t-1)/(T-1))^p * (T-1)), b = (sqrt_eta_T/sqrt_eta_1)^(1/(T-1)).
    Returns a float64 array of shape [T].
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sqrt_eta_first <= sqrt_eta_last <= 1:
        raise ValueError("need 0 < sqrt_eta_1 <= sqrt_eta_T <= 1, got "
                         f"{sqrt_eta_first} and {sqrt_eta_last}")
    if steps == 1:
        return np.array([sqrt_eta_last], dtype=np.float64)
    log_ratio = math.log(sqrt_eta_last / sqrt_eta_first)
    frac = np.linspace(0.0, 1.0, steps, dtype=np.float64) ** power
    # b^(frac*(T-1)) with log b = log_ratio/(T-1) is exp(frac * log_ratio).
    return sqrt_eta_first * np.exp(frac * log_ratio)


def official_sqrt_etas(steps: int, min_noise_level: float, etas_end: float, kappa: float,
                       power: float) -> np.ndarray:
    """The released code's ``exponential`` schedule (see module docstring)."""
    first = min(min_noise_level / kappa, min_noise_level)
    return geometric_sqrt_etas(steps, first, etas_end, power)


def paper_sqrt_etas(steps: int, kappa: float, power: float, eta_last: float = 0.999) -> np.ndarray:
    """The paper's schedule: eta_1 = min((0.04/kappa)^2, 0.001), eta_T = ``eta_last``."""
    eta_first = min((0.04 / kappa) ** 2, 0.001)
    return geometric_sqrt_etas(steps, math.sqrt(eta_first), math.sqrt(eta_last), power)


@dataclass(frozen=True)
class Schedule:
    """All per-timestep coefficients of one residual-shift process (arrays of shape [T]).

    posterior q(x_{t-1} | x_t, x_0) = N(coef1 * x_t + coef2 * x_0, variance) with
    coef1 = eta_{t-1}/eta_t, coef2 = alpha_t/eta_t, variance = kappa^2 eta_{t-1}/eta_t alpha_t,
    alpha_t = eta_t - eta_{t-1}, eta_0 = 0 (eq. 6-7).
    """

    sqrt_etas: np.ndarray
    etas: np.ndarray
    etas_prev: np.ndarray
    alpha: np.ndarray
    kappa: float
    posterior_variance: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray

    @property
    def num_steps(self) -> int:
        return int(self.etas.shape[0])

    def input_scale(self, t: int, latent: bool = True) -> float:
        """Divisor applied to x_t before the network (``normalize_input``).

        Latent models: sqrt(kappa^2 eta_t + 1) (latents have roughly unit variance).
        Pixel models: 3 kappa sqrt(eta_t) + 1 (a bound on |x_t| for x_0 in [-1, 1]).
        """
        if latent:
            return math.sqrt(self.kappa ** 2 * float(self.etas[t]) + 1.0)
        return 3.0 * self.kappa * float(self.sqrt_etas[t]) + 1.0

    def posterior(self, t: int) -> tuple[float, float, float]:
        """(coef1, coef2, variance) at index t: x_{t-1} ~ N(coef1 x_t + coef2 x_0, variance)."""
        return (float(self.posterior_mean_coef1[t]), float(self.posterior_mean_coef2[t]),
                float(self.posterior_variance[t]))

    def prior_std(self) -> float:
        """Std of x_T around y_0: kappa * sqrt(eta_T)."""
        return self.kappa * float(self.sqrt_etas[-1])


def make_schedule(sqrt_etas: np.ndarray, kappa: float) -> Schedule:
    """Build every coefficient from sqrt(eta_t) (shape [T]) and kappa."""
    sqrt_etas = np.asarray(sqrt_etas, dtype=np.float64)
    etas = sqrt_etas ** 2
    etas_prev = np.append(0.0, etas[:-1])
    alpha = etas - etas_prev
    return Schedule(
        sqrt_etas=sqrt_etas,
        etas=etas,
        etas_prev=etas_prev,
        alpha=alpha,
        kappa=float(kappa),
        posterior_variance=kappa ** 2 * etas_prev / etas * alpha,
        posterior_mean_coef1=etas_prev / etas,
        posterior_mean_coef2=alpha / etas,
    )


def schedule_from_config(diffusion: dict) -> Schedule:
    """Schedule from a ``diffusion.params`` dict with the official names.

    Keys: steps, kappa, schedule_name ("exponential" | "paper"), schedule_kwargs.power,
    min_noise_level and etas_end (exponential) or eta_T (paper, default 0.999).
    """
    name = diffusion.get("schedule_name", "exponential")
    steps = int(diffusion["steps"])
    kappa = float(diffusion["kappa"])
    power = float((diffusion.get("schedule_kwargs") or {}).get("power", 0.3))
    if name == "exponential":
        sqrt_etas = official_sqrt_etas(steps, float(diffusion["min_noise_level"]),
                                       float(diffusion["etas_end"]), kappa, power)
    elif name == "paper":
        sqrt_etas = paper_sqrt_etas(steps, kappa, power, float(diffusion.get("eta_T", 0.999)))
    else:
        raise ValueError(f"unknown schedule_name {name!r}: use 'exponential' or 'paper'")
    return make_schedule(sqrt_etas, kappa)
