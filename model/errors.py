"""Typed errors of the model layer. The service maps them to HTTP statuses in one place."""

from __future__ import annotations


class ModelError(Exception):
    """Base class: something about a model or an input the user can fix."""


class ConfigError(ModelError):
    """A model configuration (preset, YAML, model.json) is missing or inconsistent."""


class CheckpointError(ModelError):
    """A checkpoint file cannot be read or does not fit its configuration."""


class InputImageError(ModelError):
    """An input image (or mask) cannot be used: unreadable, too big, wrong size..."""


class ImageTooLargeError(InputImageError):
    """The image has more pixels than allowed (decompression bombs included)."""
