"""The two small networks of the IPR diffusion: CPEN_S2 and the IPR denoiser.

CPEN_S2 encodes the LQ image into a 256-number condition vector; the denoiser is an
MLP that predicts the clean IPR x_0 from (x_t, t, condition). Attribute names and
``nn.Sequential`` indices follow the official state dict (``condition.E.<i>``,
``condition.mlp.<i>``, ``denoise.resmlp.<i>``) so checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import CPEN_WIDTH, IPR_WIDTH

NEGATIVE_SLOPE = 0.1


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEGATIVE_SLOPE)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ConvResBlock(nn.Module):
    """x + conv(lrelu(conv(x))), 3x3 convolutions with bias; (B, C, H, W) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv3(channels, channels), _lrelu(),
                                  _conv3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditionEncoder(nn.Module):
    """CPEN_S2: LQ image (B, 3, H, W) in [0, 1] -> condition (B, 256).

    x2 and x1 models see the LQ pixel-unshuffled by ``unshuffle`` (2 or 4), like their
    transformer does, so the encoder works at the same resolution for every scale.
    Convolutions, ``n_res`` residual blocks, a widening to 256 channels, a global
    average and a two-layer MLP; every layer ends in LeakyReLU(0.1), the MLP too.
    """

    def __init__(self, n_res: int, unshuffle: int = 1, in_channels: int = 3):
        super().__init__()
        self.unshuffle = unshuffle
        w = CPEN_WIDTH
        self.E = nn.Sequential(
            _conv3(in_channels * unshuffle ** 2, w), _lrelu(),
            *[ConvResBlock(w) for _ in range(n_res)],
            _conv3(w, 2 * w), _lrelu(),
            _conv3(2 * w, 2 * w), _lrelu(),
            _conv3(2 * w, 4 * w), _lrelu(),
            nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(4 * w, 4 * w), _lrelu(),
                                 nn.Linear(4 * w, 4 * w), _lrelu())

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(lq, self.unshuffle) if self.unshuffle > 1 else lq
        return self.mlp(self.E(x).flatten(1))


class _DenseAct(nn.Module):
    """Linear + LeakyReLU. (Named "ResMLP" officially, but it has no skip connection.)"""

    def __init__(self, width: int):
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(width, width), _lrelu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class IPRDenoiser(nn.Module):
    """x_0 prediction from (x_t (B, 256), t (B,) step index, condition (B, 256)).

    The step enters as one extra input, t / (10 T); the MLP input is
    [condition, t / (10 T), x_t] in that order (513 numbers).
    """

    def __init__(self, n_layers: int, timesteps: int):
        super().__init__()
        self.t_period = float(10 * timesteps)
        self.resmlp = nn.Sequential(nn.Linear(2 * IPR_WIDTH + 1, IPR_WIDTH), _lrelu(),
                                    *[_DenseAct(IPR_WIDTH) for _ in range(n_layers)])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor
                ) -> torch.Tensor:
        t_in = (t.float() / self.t_period).view(-1, 1).to(x_t.dtype)
        return self.resmlp(torch.cat([condition, t_in, x_t], dim=1))
