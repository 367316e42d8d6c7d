"""Small pieces the Swin-UNet and its Swin stages share."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def is_tracing() -> bool:
    """True while torch.jit.trace / torch.onnx (TorchScript) / torch.export / dynamo trace us."""
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and getattr(compiler, "is_compiling", lambda: False)())


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, always evaluated in float32.

    Input/output: ``(B, C, ...)``; the result is cast back to the input dtype. Narrower
    layers than 32 channels (small test and demo networks; ``norm_groups`` then sets the
    groups) start with as many groups as divide them.
    """

    def __init__(self, channels: int):
        super().__init__(math.gcd(32, channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)
