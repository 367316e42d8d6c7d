"""Residual-shift sampling (Algorithm 2 of the TPAMI paper) over any denoiser.

The sampler owns the loop and the posterior arithmetic; the network is whatever callable
is passed in, with one fixed signature::

    denoiser(x_scaled, t, lq, mask) -> x0_pred
        x_scaled: BxCxHxW, x_t divided by the schedule's input scale
        t:        int64 tensor [B] of 0-based timestep indices
        lq, mask: conditioning, passed through untouched (may be None)

so torch, onnxruntime and TensorRT backends, and the tiling wrapper, are small adapters.
Progress goes through ``callback(i, t, x_t, x0_pred)``; nothing is printed here.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence

import torch

from .schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]],
                    torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
SamplerMode = Literal["full", "single_step"]


def draw_noises(shape: Sequence[int], count: int,
                generator: torch.Generator | Sequence[torch.Generator] | None = None,
                device: torch.device | str = "cpu", dtype=torch.float32) -> list[torch.Tensor]:
    """Draw ``count`` standard-normal tensors of ``shape`` (BxCxHxW).

    Noise is always drawn on the CPU in float32 so that the same seed gives the same
    image on every device and backend. With a sequence of generators (one per batch
    item), item b's noise comes only from generator b: batching never changes a result.
    """
    shape = tuple(int(s) for s in shape)
    if generator is None or isinstance(generator, torch.Generator):
        out = [torch.randn(shape, generator=generator, dtype=torch.float32) for _ in range(count)]
    else:
        gens = list(generator)
        if len(gens) != shape[0]:
            raise ValueError(f"{len(gens)} generators for a batch of {shape[0]}")
        per_item = [[torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32)
                     for _ in range(count)] for g in gens]
        out = [torch.cat([items[i] for items in per_item]) for i in range(count)]
    return [n.to(device=device, dtype=dtype) for n in out]


def prior_sample(y: torch.Tensor, schedule: Schedule, noise: torch.Tensor) -> torch.Tensor:
    """x_T = y + kappa * sqrt(eta_T) * noise (the prior N(y, kappa^2 eta_T I))."""
    return y + schedule.prior_std() * noise


def q_sample(x0: torch.Tensor, y: torch.Tensor, schedule: Schedule, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0, y_0) = N(x_0 + eta_t (y_0 - x_0), kappa^2 eta_t I) (eq. 2).

    t: int64 [B] of 0-based indices; used by training (Algorithm 1).
    """
    etas = torch.as_tensor(schedule.etas, dtype=x0.dtype, device=x0.device)[t]
    stds = torch.as_tensor(schedule.kappa * schedule.sqrt_etas, dtype=x0.dtype,
                           device=x0.device)[t]
    view = (-1,) + (1,) * (x0.dim() - 1)
    return x0 + etas.view(view) * (y - x0) + stds.view(view) * noise


def posterior_step(x_t: torch.Tensor, x0_pred: torch.Tensor, schedule: Schedule, t: int,
                   noise: Optional[torch.Tensor]) -> torch.Tensor:
    """One reverse step: x_{t-1} = coef1 x_t + coef2 x0 (+ sqrt(var) noise when t > 0)."""
    mean = (float(schedule.posterior_mean_coef1[t]) * x_t
            + float(schedule.posterior_mean_coef2[t]) * x0_pred)
    if t == 0 or noise is None:
        return mean
    return mean + float(schedule.posterior_variance[t]) ** 0.5 * noise


def sample(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *,
           lq: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
           noises: Optional[Sequence[torch.Tensor]] = None,
           generator: torch.Generator | Sequence[torch.Generator] | None = None,
           latent: bool = True, normalize_input: bool = True,
           clip_denoised: Optional[bool] = None, mode: SamplerMode = "full",
           return_trajectory: bool = False,
           callback: Optional[Callback] = None) -> torch.Tensor | list[torch.Tensor]:
    """Run the reverse residual-shift chain from the degraded latent ``y`` (BxCxHxW).

    noises: T+1 tensors shaped like y; noises[0] draws x_T, noises[i] is added at the
        i-th reverse step (timestep index T-i); the last step adds none. Drawn from
        ``generator`` when omitted.
    clip_denoised: clamp x0 predictions to [-1, 1]; default: only for pixel-space models,
        as the official sampler does.
    mode: "full" runs all T steps; "single_step" is one network call at t = T-1 whose x0
        prediction is the result (one-step distilled models such as SinSR).
    Returns x_0, or the list [x_T, ..., x_0] with ``return_trajectory``.
    """
    steps = schedule.num_steps
    if clip_denoised is None:
        clip_denoised = not latent
    if noises is None:
        noises = draw_noises(y.shape, steps + 1, generator, device=y.device, dtype=y.dtype)
    if len(noises) < (1 if mode == "single_step" else steps):
        raise ValueError(f"need {steps + 1} noises for {steps} steps, got {len(noises)}")

    x = prior_sample(y, schedule, noises[0])
    trajectory = [x]
    batch = y.shape[0]
    last = 1 if mode == "single_step" else steps
    for i in range(1, last + 1):
        t = steps - i
        t_batch = torch.full((batch,), t, dtype=torch.long, device=y.device)
        scale = schedule.input_scale(t, latent) if normalize_input else 1.0
        x0_pred = denoiser(x / scale, t_batch, lq, mask)
        if clip_denoised:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        if mode == "single_step":
            x = x0_pred
        else:
            x = posterior_step(x, x0_pred, schedule, t, noises[i] if i < len(noises) else None)
        if callback is not None:
            callback(i, t, x, x0_pred)
        trajectory.append(x)
    return trajectory if return_trajectory else x
