"""What the network's output means: ``diffusion.predict_type`` = "xstart" | "residual".

* ``xstart`` (the official models): the UNet predicts x_0 itself.
* ``residual``: the UNet predicts the residual e_0 = y_0 - x_0, so x_0 = y_0 - f(...).
  Only for pixel-space models whose lq conditioning *is* y_0 (``lq_size == image_size``:
  the LQ upsampled bicubically to the output size), so the adapter needs nothing but the
  denoiser's own arguments and tiles like any denoiser.

Why ``residual`` exists: the Swin-UNet ends with GroupNorm -> SiLU -> conv, and a
GroupNorm with one channel per group removes each channel's per-image mean and scale.
A pixel-space x_0 predictor must then re-learn every image's absolute colour from
normalised features: with the demo recipe it was still 6.4 dB *below* bicubic on the
validation crops after 500 CPU steps (and no better than at step 250), and correcting
just the per-crop mean of its t=0 prediction gained 6.4 dB. The residual, whose
per-image mean is ~0, is easy for it (see docs/demo_model.md).

``ParametrizedRestorer`` applies the adapter in its ``denoiser()``; training,
validation and ``resshift eval`` use it so that residual models are scored correctly
whatever the core restorer does.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..restorer import Restorer
from ..sampler import Denoiser

PREDICT_TYPES = ("xstart", "residual")


def predict_type(config: ModelConfig) -> str:
    kind = str(config.diffusion.get("predict_type", "xstart"))
    if kind not in PREDICT_TYPES:
        raise ConfigError(f"predict_type {kind!r} is not supported; use one of {PREDICT_TYPES}")
    if kind == "residual" and (config.latent or int(config.unet.get("lq_size", 0))
                               != int(config.unet.get("image_size", -1))):
        raise ConfigError("predict_type 'residual' needs a pixel-space model with "
                          "lq_size == image_size (its lq conditioning is y_0)")
    return kind


def to_x0(output: torch.Tensor, y0: Optional[torch.Tensor], kind: str) -> torch.Tensor:
    """The x_0 prediction from the network output (``y0``: the canvas the chain starts
    from, i.e. the lq conditioning of a pixel-space model)."""
    if kind == "xstart":
        return output
    if y0 is None:
        raise ConfigError("a residual model needs its lq conditioning")
    return y0.to(output.dtype) - output


class ParametrizedRestorer(Restorer):
    """A Restorer whose denoiser turns the network output into x_0 per predict_type."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predict_type = predict_type(self.config)

    def denoiser(self) -> Denoiser:
        unet, kind = self.unet, self.predict_type

        def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
            return to_x0(unet(x, t, lq=lq, mask=mask), lq, kind)
        return run

    @classmethod
    def from_restorer(cls, r: Restorer) -> "ParametrizedRestorer":
        return cls(r.config, r.unet, r.autoencoder, r.device)


def load_parametrized(path, device="cpu") -> ParametrizedRestorer:
    """``model.load`` + the predict_type adapter."""
    from ..directory import load
    return ParametrizedRestorer.from_restorer(load(path, device))
