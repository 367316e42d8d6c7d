"""Algorithm 1 of ResShift: the training objective for one batch.

    x_0 = E(gt) (latent models, frozen encoder) or gt (pixel models)
    y_0 = E(bicubic_sf(lq)) or bicubic_sf(lq)
    t ~ U{0..T-1},  x_t = x_0 + eta_t (y_0 - x_0) + kappa sqrt(eta_t) eps   (eq. 2)
    loss = || x0_hat - x_0 ||^2  [+ lambda LPIPS(D(x0_hat), gt)]
    x0_hat = f(x_t / s_t, lq-conditioning, t)        (predict_type xstart, the official)
           = y_0 - f(x_t / s_t, y_0, t)               (predict_type residual, pixel models)

with s_t the schedule's input scale (``normalize_input``). x0_hat is the restorer's own
denoiser (``model.denoiser.X0Denoiser``) around the network being trained, and the
conditioning is exactly what the Restorer feeds the UNet at sampling time
(``Restorer.conditioning``), so a trained network is used as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..denoiser import module_network
from ..restorer import Restorer
from ..sampler import q_sample, sample, scale_noises


# 1e-3 in [-1, 1] units is a baseline of 36 dB PSNR: better pairs count as that one
RELATIVE_FLOOR = 1e-3


@dataclass
class Targets:
    """x0 (BxCxHxW), y0 (same shape) and the UNet's lq conditioning (or None)."""

    x0: torch.Tensor
    y0: torch.Tensor
    cond: Optional[torch.Tensor]


@dataclass
class LossOutput:
    loss: torch.Tensor          # scalar, what backward() sees
    mse: float
    lpips: Optional[float]


@torch.no_grad()
def make_targets(restorer: Restorer, gt: torch.Tensor, lq: torch.Tensor) -> Targets:
    """gt: Bx3xHxW, lq: Bx3x(H/sf)x(W/sf), both in [-1, 1] on the restorer's device."""
    y0 = restorer.encode_lq(lq)
    x0 = restorer.autoencoder.encode(gt) if restorer.latent else gt
    cond = restorer.conditioning(lq, y0) if restorer.spec.cond_lq else None
    return Targets(x0, y0, cond)


def diffusion_loss(unet: nn.Module, restorer: Restorer, targets: Targets, t: torch.Tensor,
                   noise: torch.Tensor, gt: Optional[torch.Tensor] = None,
                   lpips: Optional[nn.Module] = None, lpips_weight: float = 0.0,
                   mask: Optional[torch.Tensor] = None, relative: bool = False) -> LossOutput:
    """The loss of Algorithm 1 for timesteps ``t`` [B] and noise shaped like x0.

    relative: each sample's squared error over its bicubic baseline's (``y_0``), the
    ``relative_l2`` loss of the recipe; ``mse`` stays the plain mean for the log."""
    x_t = q_sample(targets.x0, targets.y0, restorer.schedule, t, noise)
    pred = restorer.denoiser(module_network(unet))(x_t, t, targets.cond, mask)
    return _fit(pred, restorer, targets, gt, lpips, lpips_weight, relative)


def chain_loss(unet: nn.Module, restorer: Restorer, targets: Targets,
               noises: list[torch.Tensor], gt: Optional[torch.Tensor] = None,
               lpips: Optional[nn.Module] = None, lpips_weight: float = 0.0,
               mask: Optional[torch.Tensor] = None, relative: bool = False) -> LossOutput:
    """The same fit, scored on what sampling returns: the whole reverse chain from
    x_T, run with gradients through every network call (T of them).

    noises: T+1 standard-normal tensors shaped like x0, scaled by the model's
    ``noise_scale`` as ``Restorer.sample`` scales them, so the chain trained is the
    chain that runs. Algorithm 1 teaches each timestep alone, on x_t drawn from the
    forward process; this fine-tunes the steps together for the image they end in
    (a deterministic chain, ``noise_scale`` 0, is one fixed function of y_0 then)."""
    noises = scale_noises(noises, restorer.spec.noise_scale)
    pred = sample(restorer.denoiser(module_network(unet)), targets.y0, restorer.schedule,
                  lq=targets.cond, mask=mask, noises=noises,
                  clip_denoised=restorer.spec.clip_denoised, mode=restorer.spec.sampler)
    return _fit(pred, restorer, targets, gt, lpips, lpips_weight, relative)


def _fit(pred: torch.Tensor, restorer: Restorer, targets: Targets, gt: Optional[torch.Tensor],
         lpips: Optional[nn.Module], lpips_weight: float, relative: bool) -> LossOutput:
    per_sample = ((pred.float() - targets.x0.float()) ** 2).flatten(1).mean(1)
    mse = per_sample.mean()
    fit = mse
    if relative:
        base = ((targets.y0.float() - targets.x0.float()) ** 2).flatten(1).mean(1)
        # the floor keeps near-perfect baselines (flat crops) from dominating
        fit = (per_sample / (base + RELATIVE_FLOOR)).mean()
    if lpips is None or lpips_weight <= 0 or gt is None:
        return LossOutput(fit, float(mse.detach()), None)
    image = restorer.autoencoder.decode(pred, quantize=False) if restorer.latent else pred
    perceptual = lpips(image.float().clamp(-1, 1), gt.float()).mean()
    return LossOutput(fit + lpips_weight * perceptual, float(mse.detach()),
                      float(perceptual.detach()))
