"""Optimizer and learning-rate schedule.

Adam (AdamW when ``weight_decay`` > 0) and a stateless schedule: linear warm-up from
lr / warmup to lr over ``warmup_steps``, then a cosine from lr down to ``min_lr`` at the
last step. Being a pure function of the step, it resumes exactly with no state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, base: float, min_lr: float, warmup: int, total: int) -> float:
    """Learning rate for 0-based ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup - 1)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
