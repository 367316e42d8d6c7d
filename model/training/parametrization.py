"""Which ``diffusion.predict_type`` a training config asks for, checked before training.

What the types mean, and the conversion to x_0 that sampling and training share, are
``model.denoiser``'s.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..denoiser import PREDICT_TYPES
from ..errors import ConfigError


def predict_type(config: ModelConfig) -> str:
    kind = str(config.diffusion.get("predict_type", "xstart"))
    if kind not in PREDICT_TYPES:
        raise ConfigError(f"predict_type {kind!r} is not supported; use one of {PREDICT_TYPES}")
    if kind == "residual" and (config.latent or int(config.unet.get("lq_size", 0))
                               != int(config.unet.get("image_size", -1))):
        raise ConfigError("predict_type 'residual' needs a pixel-space model with "
                          "lq_size == image_size (its lq conditioning is y_0)")
    return kind
