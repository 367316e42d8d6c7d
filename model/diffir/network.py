"""DiffIR S2 as one module: ``G`` (DIRformer), ``condition`` (CPEN_S2), ``denoise``.

The official ``DiffIRS2`` also holds a ``diffusion`` module that re-registers the
condition encoder and the denoiser (hence the duplicate ``diffusion.model.*`` and
``diffusion.condition.*`` keys) next to the schedule buffers. Here the schedule is
plain data (``model.diffir.schedule``) and the sampling loop a function
(``model.diffir.sampler``), so the module holds each weight once;
``model.diffir.checkpoint`` maps the official keys onto it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import DiffIRConfig
from .dirformer import DIRformer
from .prior import ConditionEncoder, IPRDenoiser


class DiffIRS2Net(nn.Module):
    """The networks of one DiffIR S2 model (no schedule, no sampling loop)."""

    def __init__(self, cfg: DiffIRConfig):
        super().__init__()
        self.config = cfg
        self.G = DIRformer(cfg)
        self.condition = ConditionEncoder(cfg.n_encoder_res, cfg.unshuffle, cfg.inp_channels)
        self.denoise = IPRDenoiser(cfg.n_denoise_res, cfg.timesteps)

    def forward(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        """The restorer alone: padded LQ (B, 3, H, W) in [0, 1] and IPR -> SR."""
        return self.G(lq, ipr)


def build_network(cfg: DiffIRConfig, device: str | torch.device = "cpu") -> DiffIRS2Net:
    """A freshly initialised network (``device="meta"``: shapes only, no memory)."""
    with torch.device(device):
        return DiffIRS2Net(cfg)
