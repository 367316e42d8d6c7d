"""The DDPM schedule over the IPR (DiffIR's compact prior), as pure functions.

DiffIR runs a short DDPM (T = 4 for the released models) over a 256-number vector
instead of an image. Its betas are the latent-diffusion "linear" schedule, i.e. linear
in sqrt(beta) (Rombach et al. 2022), and sampling only ever needs the posterior mean of
q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7):

    mu_t(x_t, x_0) = coef1_t * x_0 + coef2_t * x_t
    coef1_t = beta_t * sqrt(abar_{t-1}) / (1 - abar_t)
    coef2_t = (1 - abar_{t-1}) * sqrt(alpha_t) / (1 - abar_t)

The official checkpoints store this schedule as twelve ``diffusion.*`` buffers; loading
checks them against the configured schedule (``check_stored``) so that a checkpoint
trained with other betas is refused rather than silently sampled wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import CheckpointError

# The buffer names of the official DDPM module, in state-dict order.
BUFFER_NAMES = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
                "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2")
BUFFER_PREFIX = "diffusion."


@dataclass(frozen=True)
class IPRSchedule:
    """Posterior-mean coefficients, each a float32 tensor of shape (T,), index = step t."""

    coef1: torch.Tensor   # multiplies the predicted x_0
    coef2: torch.Tensor   # multiplies x_t

    @property
    def num_steps(self) -> int:
        return int(self.coef1.shape[0])

    def posterior(self, t: int) -> tuple[float, float, float]:
        """(coefficient of x_t, coefficient of x_0, variance) at step t, the form
        ``model.sampler.step`` takes (note the official names: coef1 is x_0's). The
        variance is 0: DiffIR samples the posterior mean only."""
        return float(self.coef2[t]), float(self.coef1[t]), 0.0


def linear_betas(timesteps: int, start: float, end: float) -> torch.Tensor:
    """(T,) float64 betas, evenly spaced in sqrt(beta) from sqrt(start) to sqrt(end)."""
    return torch.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=torch.float64) ** 2


def schedule_buffers(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """All twelve official buffers (float64) computed from ``betas`` (T,)."""
    betas = betas.double()
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, 0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "betas": betas,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "sqrt_alphas_cumprod": abar.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
        "posterior_variance": variance,
        # the variance is 0 at t = 0; the official code clips before the log
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
        "posterior_mean_coef2": (1.0 - abar_prev) * alphas.sqrt() / (1.0 - abar),
    }


def make_schedule(timesteps: int, start: float, end: float) -> IPRSchedule:
    """The schedule a config describes (no checkpoint involved)."""
    buffers = schedule_buffers(linear_betas(timesteps, start, end))
    return IPRSchedule(buffers["posterior_mean_coef1"].float(),
                       buffers["posterior_mean_coef2"].float())


def check_stored(stored: Mapping[str, torch.Tensor], timesteps: int, start: float,
                 end: float, rtol: float = 1e-4) -> IPRSchedule:
    """Check a checkpoint's schedule buffers against the config; return the schedule.

    ``stored`` maps buffer names (without ``diffusion.``) to tensors; any subset is
    accepted (an empty mapping means the checkpoint carries no schedule). The stored
    float32 coefficients are what the official code samples with, so they are used as
    they are once they agree with the computed ones.
    """
    expected = schedule_buffers(linear_betas(timesteps, start, end))
    unknown = sorted(set(stored) - set(expected))
    if unknown:
        raise CheckpointError(f"unexpected diffusion buffer(s) {', '.join(unknown)}")
    for name, value in stored.items():
        want = expected[name]
        if tuple(value.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{BUFFER_PREFIX}{name} has shape {tuple(value.shape)} but the config "
                f"(timesteps={timesteps}) wants {tuple(want.shape)}")
        got = value.double()
        if not torch.allclose(got, want, rtol=rtol, atol=1e-6):
            raise CheckpointError(
                f"the checkpoint's schedule ({BUFFER_PREFIX}{name} = "
                f"{[round(v, 6) for v in got.tolist()]}) differs from the configured one "
                f"({[round(v, 6) for v in want.tolist()]}); check linear_start, linear_end "
                "and timesteps in the config")
    coef1 = stored.get("posterior_mean_coef1", expected["posterior_mean_coef1"])
    coef2 = stored.get("posterior_mean_coef2", expected["posterior_mean_coef2"])
    return IPRSchedule(coef1.detach().float().clone(), coef2.detach().float().clone())

