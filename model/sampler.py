"""Residual-shift sampling (Algorithm 2 of the TPAMI paper) over any denoiser.

``step`` is the one reverse step (clipping, single-step, the posterior) of every
sampler and stepper: ``sample`` here, the service's ``model.stepper.TiledJob`` and
DiffIR's IPR loop (``model.diffir.sampler``). ``sample`` owns the loop; the network is
whatever callable is passed in, with one fixed signature::

    denoiser(x_t, t, lq, mask) -> x0_pred
        x_t:      BxCxHxW, the raw chain state
        t:        int64 tensor [B] of 0-based timestep indices (on the CPU here)
        lq, mask: conditioning, passed through untouched (may be None)

What the network takes and gives (input scaling, residual outputs) is the denoiser's
business (``model.denoiser.X0Denoiser``), so torch, onnxruntime and TensorRT networks,
and the tiling wrapper, all look the same from here. Progress goes through
``callback(i, t, x_t, x0_pred)``; nothing is printed here.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Protocol, Sequence

import torch

from .schedule import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]],
                    torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
SamplerMode = Literal["full", "single_step"]
# a noise tensor, or a function drawing one (given a spare tensor of x_t's shape it may
# draw into, or None), called only when the step adds noise
Noise = torch.Tensor | Callable[[Optional[torch.Tensor]], torch.Tensor]


class Posterior(Protocol):
    """What ``step`` needs of a schedule (``model.schedule.Schedule``, DiffIR's
    ``IPRSchedule``)."""

    def posterior(self, t: int) -> tuple[float, float, float]:
        """(coefficient of x_t, coefficient of x_0, variance) of q(x_{t-1} | x_t, x_0)."""


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


def scale_noises(noises: Sequence[torch.Tensor], scale: float) -> Sequence[torch.Tensor]:
    """``noises`` times a model's ``noise_scale`` (new tensors; the same ones at 1)."""
    return noises if scale == 1.0 else [n * scale for n in noises]


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


def step(schedule: Posterior, t: int, x_t: torch.Tensor, x0: torch.Tensor,
         noise: Optional[Noise] = None, *, clip: bool = False, mode: SamplerMode = "full",
         inplace: bool = False) -> torch.Tensor:
    """One reverse step at timestep index ``t``: x_{t-1} from x_t and the x_0 prediction.

    clip: clamp x0 to [-1, 1] first (pixel-space models). mode "full": the posterior,
    x_{t-1} = c_xt x_t + c_x0 x0 (+ sqrt(variance) noise when t > 0 and noise is
    given); "single_step": x0 itself (one-step distilled models such as SinSR).

    A function of its arguments. ``inplace`` computes the same numbers (the same
    operations in the same order) in the given tensors' memory instead of new
    tensors: x_t holds the result, x0 and a noise tensor are used up, and a noise
    function is handed x0's memory to draw into. A large canvas then steps with no
    canvas-sized temporaries.
    """
    if clip:
        x0 = x0.clamp_(-1.0, 1.0) if inplace else x0.clamp(-1.0, 1.0)
    if mode == "single_step":
        return x0
    if mode != "full":
        raise ValueError(f"unknown sampler mode {mode!r}: use 'full' or 'single_step'")
    c_xt, c_x0, variance = schedule.posterior(t)
    if inplace:
        x = x_t.mul_(c_xt).add_(x0.mul_(c_x0))
    else:
        x = c_xt * x_t + c_x0 * x0
    if t == 0 or noise is None:
        return x
    drawn = noise(x0 if inplace else None) if callable(noise) else noise
    std = variance ** 0.5
    return x.add_(drawn.mul_(std)) if inplace else x + std * drawn


def sample(denoiser: Denoiser, y: torch.Tensor, schedule: Schedule, *,
           lq: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
           noises: Optional[Sequence[torch.Tensor]] = None,
           generator: torch.Generator | Sequence[torch.Generator] | None = None,
           clip_denoised: bool = False, mode: SamplerMode = "full",
           return_trajectory: bool = False,
           callback: Optional[Callback] = None) -> torch.Tensor | list[torch.Tensor]:
    """Run the reverse residual-shift chain from the degraded latent ``y`` (BxCxHxW).

    noises: T+1 tensors shaped like y; noises[0] draws x_T, noises[i] is added at the
        i-th reverse step (timestep index T-i); the last step adds none. Drawn from
        ``generator`` when omitted.
    clip_denoised: clamp x0 predictions to [-1, 1] (the official sampler does for
        pixel-space models: ``ModelSpec.clip_denoised``).
    mode: "full" runs all T steps; "single_step" is one network call at t = T-1 whose x0
        prediction is the result (one-step distilled models such as SinSR).
    callback(i, t, x_{t-1}, x0_pred) after each step, x0_pred as the denoiser gave it.
    Returns x_0, or the list [x_T, ..., x_0] with ``return_trajectory``.
    """
    steps = schedule.num_steps
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
        x0_pred = denoiser(x, torch.full((batch,), t, dtype=torch.long), lq, mask)
        x = step(schedule, t, x, x0_pred, noises[i] if i < len(noises) else None,
                 clip=clip_denoised, mode=mode)
        if callback is not None:
            callback(i, t, x, x0_pred)
        trajectory.append(x)
    return trajectory if return_trajectory else x
