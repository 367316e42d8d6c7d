"""Fixtures and hooks for the whole suite: the reference models under ../shared (ResShift
and DiffIR), the thread count, a private export cache. Plain helpers are in tests/helpers."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

import pytest
import torch

from tests.helpers.paths import DATA, DIFFIR_REFERENCE, REFERENCE

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


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Training recipes and ``eval --threads`` set torch's thread count; each test hands
    back the count it found (the one set above), so no test runs at another's setting."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


# -- ResShift: realsr_small, the official reference model ------------------------------------
@pytest.fixture(scope="session")
def reference_dir():
    if not (REFERENCE / "realsr_small.json").is_file():
        pytest.skip(f"reference vectors not found under {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def data_dir():
    if not DATA.is_dir():
        pytest.skip(f"shared data not found under {DATA}")
    return DATA


@pytest.fixture(scope="session")
def small_reference(reference_dir):
    """(config dict, unet state, autoencoder state, tensors) of realsr_small."""
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


@pytest.fixture(scope="session")
def small_model_dir(small_restorer, tmp_path_factory):
    """The realsr_small reference model written as a model directory (a Path)."""
    import model
    return model.save(small_restorer, tmp_path_factory.mktemp("models") / "small")


# -- DiffIR: diffir_realsr_small, the official reference model -------------------------------
_DIFFIR_FILES = ("diffir_realsr_small.json", "diffir_realsr_small.pth",
                 "diffir_realsr_small_tensors.pt", "diffir_realsr_presets.json")


@pytest.fixture(scope="session")
def diffir_reference_dir():
    missing = [f for f in _DIFFIR_FILES if not (DIFFIR_REFERENCE / f).is_file()]
    if missing:
        pytest.skip(f"DiffIR reference files missing under {DIFFIR_REFERENCE}: "
                    f"{', '.join(missing)}")
    return DIFFIR_REFERENCE


@pytest.fixture(scope="session")
def diffir_small(diffir_reference_dir):
    """(meta JSON, {"params_ema": state}, reference tensors) of diffir_realsr_small."""
    meta = json.loads((diffir_reference_dir / "diffir_realsr_small.json").read_text())
    ckpt = torch.load(diffir_reference_dir / "diffir_realsr_small.pth", weights_only=True)
    tensors = torch.load(diffir_reference_dir / "diffir_realsr_small_tensors.pt",
                         weights_only=True)
    return meta, ckpt, tensors


@pytest.fixture(scope="session")
def diffir_small_restorer(diffir_small):
    import model
    meta, ckpt, _ = diffir_small
    return model.import_diffir(meta["config"], ckpt)


@pytest.fixture(scope="session")
def diffir_presets(diffir_reference_dir):
    return json.loads((diffir_reference_dir / "diffir_realsr_presets.json").read_text())
