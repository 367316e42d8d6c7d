"""The raw network as a denoiser: the chain's own x_t in, the x_0 prediction out.

Samplers and steppers (``model.sampler``, ``model.stepper``) only ever hold the raw
state x_t and only ever want x_0. What the network was trained to take and to give is
kept here, in one small wrapper around it (as k-diffusion's model wrappers do):

* input scaling (``diffusion.normalize_input``): the network sees x_t / s_t with
  ``Schedule.input_scale`` (sqrt(kappa^2 eta_t + 1) for latents, 3 kappa sqrt(eta_t) + 1
  in pixel space);
* what its output means (``diffusion.predict_type``):

  - ``xstart`` (the official models): the network predicts x_0 itself;
  - ``residual``: it predicts the residual e_0 = y_0 - x_0, so x_0 = y_0 - f(...). Only
    for pixel-space models whose lq conditioning *is* y_0 (``lq_size == image_size``:
    the LQ upsampled bicubically to the output size), so the wrapper needs nothing but
    the denoiser's own arguments and tiles like any denoiser.

Why ``residual`` exists: the Swin-UNet ends with GroupNorm -> SiLU -> conv, and a
GroupNorm with one channel per group removes each channel's per-image mean and scale.
A pixel-space x_0 predictor must then re-learn every image's absolute colour from
normalised features: with the demo recipe it was still 6.4 dB *below* bicubic on the
validation crops after 500 CPU steps (and no better than at step 250), and correcting
just the per-crop mean of its t=0 prediction gained 6.4 dB. The residual, whose
per-image mean is ~0, is easy for it (see docs/demo_model.md).

Training uses the same wrapper around the module it trains, so a network is sampled
exactly as it was trained.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .config import PREDICT_TYPES
from .errors import ConfigError
from .schedule import Schedule

# f(x_scaled, t, lq, mask) -> what the network outputs (x_0 or the residual): the torch
# UNet, or a backend's graph / engine (``export.backends``)
Network = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]],
                   torch.Tensor]


def module_network(module: torch.nn.Module) -> Network:
    """A UNet module (or a wrapper of one, such as DistributedDataParallel) as a
    ``Network``."""
    def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
        return module(x, t, lq=lq, mask=mask)
    return run


def to_x0(output: torch.Tensor, y0: Optional[torch.Tensor], kind: str) -> torch.Tensor:
    """The x_0 prediction from the network output (``y0``: the canvas the chain starts
    from, i.e. the lq conditioning of a pixel-space model)."""
    if kind == "xstart":
        return output
    if y0 is None:
        raise ConfigError("a residual model needs its lq conditioning")
    return y0.to(output.dtype) - output


class X0Denoiser:
    """``network`` as the samplers' denoiser: ``(x_t, t, lq, mask) -> x0``.

    x_t: BxCxhxw, the raw chain state. t: int64 [B] of 0-based timestep indices, on any
    device (the samplers here keep it on the CPU, so reading the steps costs no device
    synchronisation); the network gets it on x_t's device. Items may be at different
    timesteps (the service batches tiles of many requests). lq, mask: passed through.
    """

    def __init__(self, network: Network, schedule: Schedule, *, latent: bool,
                 normalize_input: bool = True, predict_type: str = "xstart"):
        if predict_type not in PREDICT_TYPES:
            raise ConfigError(f"predict_type {predict_type!r} is not supported; use one of "
                              f"{', '.join(PREDICT_TYPES)}")
        self.network, self.schedule = network, schedule
        self.latent, self.normalize_input = latent, normalize_input
        self.predict_type = predict_type

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t divided by its item's input scale (x_t itself without ``normalize_input``).

        Each divisor is a Python number, as the official sampler uses it: a batch at one
        timestep is divided at once, a mixed batch item by item (a per-item tensor of
        divisors rounds differently on GPUs, which divide by a number as a multiply by
        its reciprocal)."""
        if not self.normalize_input:
            return x_t
        steps = [int(s) for s in t.tolist()]
        if len(set(steps)) == 1:
            return x_t / self.schedule.input_scale(steps[0], self.latent)
        return torch.cat([x_t[i:i + 1] / self.schedule.input_scale(s, self.latent)
                          for i, s in enumerate(steps)])

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, lq: Optional[torch.Tensor],
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
        out = self.network(self.scale_input(x_t, t), t.to(x_t.device), lq, mask)
        return to_x0(out, lq, self.predict_type)
