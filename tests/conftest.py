"""Shared fixtures: where ../shared lives, the small official reference model."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RESSHIFT_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "resshift-official"
DATA = SHARED / "data"

# Small models spend their time in many small ops, where a second intra-op thread costs
# more than it brings on these 2-core machines (3-4x slower when anything else runs).
torch.set_num_threads(int(os.environ.get("RESSHIFT_TEST_THREADS", "1")))

# ONNX graphs exported on first use go to the per-user cache; tests (and the CLI
# processes they start, which inherit the variable) get a private one, removed at exit.
if "RESSHIFT_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="resshift-test-cache-")
    os.environ["RESSHIFT_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "realsr_small.json").is_file():
        pytest.skip(f"reference vectors not found under {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found under {DATA}")
    return DATA


@pytest.fixture(scope="session")
def small_reference(reference_dir):
    """(config dict, unet state, autoencoder state, tensors) of realsr_small."""
    import json
    meta = json.loads((reference_dir / "realsr_small.json").read_text())
    unet = torch.load(reference_dir / "realsr_small_unet.pth", weights_only=True)
    ae = torch.load(reference_dir / "realsr_small_autoencoder.pth", weights_only=True)
    tensors = torch.load(reference_dir / "realsr_small_tensors.pt", weights_only=True)
    return meta, unet, ae, tensors


@pytest.fixture(scope="session")
def small_restorer(small_reference):
    """The realsr_small reference model as a Restorer (CPU, float32)."""
    import model
    meta, unet, ae, _ = small_reference
    official = {k: {"params": v} for k, v in meta["config"].items()}
    return model.import_official(official, unet, ae)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())
