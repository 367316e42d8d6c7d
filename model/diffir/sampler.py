"""The reverse process over the IPR: T deterministic posterior-mean steps.

DiffIR's inference draws one Gaussian x_T (B, 256) and then, for t = T-1 .. 0, asks the
denoiser for x_0 given (x_t, t, condition) and moves to the posterior mean
mu_t(x_t, x_0) with *no* added noise (``clip_denoised`` is off): ResShift's one reverse
step (``model.sampler.step``) with no noise. The loop knows nothing about networks: the
denoiser is any callable ``f(x_t, t, condition) -> x_0`` with x_t (B, 256), t (B,) int64
and condition (B, 256).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..sampler import step
from .schedule import IPRSchedule

IPRDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]     # (t, x_{t-1} after the step)


def sample_ipr(denoiser: IPRDenoiser, condition: torch.Tensor, x_T: torch.Tensor,
               schedule: IPRSchedule, callback: Optional[StepCallback] = None,
               return_trajectory: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Run the T reverse steps from ``x_T``.

    Returns the final IPR (B, 256), or with ``return_trajectory`` the list of the T
    states after each step (the last one being the final IPR; x_T itself not included).
    """
    x = x_T
    states = []
    for t in reversed(range(schedule.num_steps)):
        steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0 = denoiser(x, steps, condition)
        x = step(schedule, t, x, x0)
        states.append(x)
        if callback is not None:
            callback(t, x)
    return states if return_trajectory else x
