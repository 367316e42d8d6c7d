"""ResShift core: schedules, networks, sampler, tiling, model directories.

Public API (docs/design.md)::

    import model
    r = model.load("models/realsr_v3", device="cpu")
    r = model.import_official("realsr_v3", unet_state, autoencoder_state)
    r.restore(image_uint8, mask=None, seed=0)

Heavy modules (torch networks) are imported on first use, so importing ``model`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, ConfigError, ImageTooLargeError, InputImageError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from .diffir import DiffIRRestorer
    from .restorer import Restorer

__all__ = ["load", "import_official", "import_diffir", "save", "CheckpointError", "ConfigError",
           "ImageTooLargeError", "InputImageError", "ModelError"]


def load(path: Any, device: Any = "cpu") -> "Restorer | DiffIRRestorer":
    """A model directory of either family (model.json's ``family`` decides)."""
    from .directory import load as _load
    return _load(path, device)


def import_official(config: Any, unet_state: Any, autoencoder_state: Any = None,
                    device: Any = "cpu") -> "Restorer":
    from .directory import import_official as _import
    return _import(config, unet_state, autoencoder_state, device)


def import_diffir(config: Any, checkpoint: Any, device: Any = "cpu"):
    """A DiffIR S2 restorer from its ``network_g`` config and official checkpoint."""
    from .diffir import import_diffir as _import
    return _import(config, checkpoint, device)


def save(restorer: "Restorer | DiffIRRestorer", directory: Any):
    """Write a restorer of either family as a model directory."""
    from .directory import save as _save
    return _save(restorer, directory)
