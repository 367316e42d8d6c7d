"""Where a model's exports live: ONNX graphs and TensorRT engines, resolved in one place.

Exports go beside the model (``MODEL_DIR/onnx/``, ``MODEL_DIR/tensorrt/``), never over
it. A model directory that cannot take them (the bundled demo inside the package, a
read-only mount, or a restorer built in memory with no directory) uses a per-user cache
keyed by the weights' hash instead::

    $RESSHIFT_CACHE_DIR/onnx/<weights sha256, 16 hex>/        (default ~/.cache/resshift)
    $RESSHIFT_CACHE_DIR/tensorrt/<weights sha256, 16 hex>/

``RESSHIFT_CACHE_DIR`` is read here only (``XDG_CACHE_HOME`` is honoured when unset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from model.directory import BUNDLED, resolve_model_dir

CACHE_ENV = "RESSHIFT_CACHE_DIR"


def cache_root() -> Path:
    """The per-user cache: ``$RESSHIFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/resshift``,
    else ``~/.cache/resshift``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "resshift"


def _writable(directory: Path) -> bool:
    """Can a sub-folder be created in (or files written to) ``directory``?"""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class ExportPaths:
    """The folders of one model's exports.

    ``onnx``: the ONNX graphs and manifest.json; ``tensorrt``: engines and the timing
    cache; ``in_model_dir``: False when they live in the cache instead.
    """

    onnx: Path
    tensorrt: Path
    in_model_dir: bool

    @classmethod
    def resolve(cls, model_dir: str | Path | None, weights_sha256: str,
                cache: Optional[Path] = None) -> "ExportPaths":
        """Beside ``model_dir`` when it is a writable, non-bundled directory (an existing
        export there is used even when the folder is read-only); else in the cache."""
        if model_dir is not None:
            bundled = str(model_dir) in BUNDLED or any(
                Path(model_dir).resolve() == p.resolve() for p in BUNDLED.values())
            directory = resolve_model_dir(model_dir)
            onnx, trt = directory / "onnx", directory / "tensorrt"
            if not bundled and (_writable(onnx) or (onnx / "manifest.json").is_file()):
                return cls(onnx, trt, True)
        return cls.cached(weights_sha256, cache)

    @classmethod
    def cached(cls, weights_sha256: str, cache: Optional[Path] = None) -> "ExportPaths":
        """The cache folders for these weights."""
        root = cache or cache_root()
        key = weights_sha256[:16]
        return cls(root / "onnx" / key, root / "tensorrt" / key, False)

    def onnx_writable(self) -> bool:
        return _writable(self.onnx)
