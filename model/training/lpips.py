"""LPIPS (Zhang et al. 2018, VGG variant) as a training loss, from weights the user has.

LPIPS needs ImageNet-trained VGG16 weights and its own linear calibration layers;
neither can be downloaded here, so ``resshift train --lpips-weights`` takes files the
user provides: one or more state dicts (.pth/.pt/.safetensors) that together hold

* the VGG16 convolution stack in torchvision's layout (``features.{0,2,5,...,28}.weight``
  / ``.bias``, e.g. torchvision's ``vgg16-397923af.pth``), and
* the five linear layers in the lpips package's layout (``lin{0..4}.model.1.weight``,
  e.g. ``lpips/weights/v0.1/vgg.pth``; ``lin{k}.weight`` is accepted too).

d(x, y) = sum_l mean_hw || w_l * (phi_l(x) / |phi_l(x)| - phi_l(y) / |phi_l(y)|) ||^2
with phi_l the relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 features of the inputs
(in [-1, 1], shifted and scaled as LPIPS does). Without weights, training is L2 only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..checkpoint import read_state_dict
from ..errors import CheckpointError

# torchvision vgg16.features: conv widths, "M" = max-pool
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_SLICE_ENDS = (4, 9, 16, 23, 30)          # after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_WIDTHS = (64, 128, 256, 512, 512)


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """Perceptual distance between Bx3xHxW images in [-1, 1]; returns [B]."""

    def __init__(self):
        super().__init__()
        self.features = _vgg_features()
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in _WIDTHS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        taps, start = [], 0
        for end in _SLICE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            taps.append(x)
            start = end
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for lin, fx, fy in zip(self.lins, self._taps(x), self._taps(y)):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(2, 3))
        return total.view(-1)

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)      # always frozen


_LIN = re.compile(r"^(?:.*\.)?lin(\d)\.(?:model\.1\.)?weight$")


def load_lpips(paths: str | Path | Sequence[str | Path]) -> LPIPS:
    """Build LPIPS from user files (see module docstring); names what is missing."""
    if isinstance(paths, (str, Path)):
        paths = [p for p in str(paths).split(",") if p]
    merged: dict[str, torch.Tensor] = {}
    for p in paths:
        merged.update(read_state_dict(Path(p)))
    net = LPIPS()
    state: dict[str, torch.Tensor] = {}
    for key, value in merged.items():
        if m := _LIN.match(key):
            state[f"lins.{m.group(1)}.weight"] = value
        elif key.startswith("features.") or key.startswith("net.features."):
            state[key[key.index("features."):]] = value
    wanted = [k for k in net.state_dict() if k not in ("shift", "scale")]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise CheckpointError(
            f"--lpips-weights lacks {len(missing)} tensors (e.g. {', '.join(missing[:4])}); "
            "give torchvision's VGG16 weights (features.*) and the lpips package's "
            "vgg.pth (lin0..lin4), comma-separated")
    for k in wanted:
        if state[k].shape != net.state_dict()[k].shape:
            raise CheckpointError(f"--lpips-weights: {k} has shape {tuple(state[k].shape)}, "
                                  f"LPIPS-VGG wants {tuple(net.state_dict()[k].shape)}")
    net.load_state_dict({**{k: state[k] for k in wanted},
                         "shift": net.shift, "scale": net.scale})
    return net
