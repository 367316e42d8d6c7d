"""Fixtures for export tests: ONNX graphs of the small reference model (its directory is
``small_model_dir`` of tests/conftest.py) and the demo, exported once per session into
temporary folders."""

from __future__ import annotations

import pytest

import model
from export.paths import CACHE_ENV
from model.directory import BUNDLED


@pytest.fixture(scope="session")
def small_onnx(small_model_dir):
    """``export_model_dir`` of the small model into its default MODEL_DIR/onnx."""
    from export.families import export_model_dir
    return export_model_dir(small_model_dir, tiles=[64])


@pytest.fixture(scope="session")
def demo_restorer():
    if not (BUNDLED["demo"] / "model.json").is_file():
        pytest.skip("the bundled demo model is not built")
    return model.load("demo")


@pytest.fixture(scope="session")
def demo_onnx(demo_restorer, tmp_path_factory):
    """The demo's UNet graph (pixel space: no VAE graphs), exported beside a copy."""
    from export.families import export_onnx
    return export_onnx(demo_restorer, tmp_path_factory.mktemp("demo") / "onnx", tiles=[64])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh per-user cache (RESSHIFT_CACHE_DIR) for one test module."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root
