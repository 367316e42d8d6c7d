"""Fixtures for the DiffIR tests: the reference vectors under shared/, small random models."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import SHARED

DIFFIR_REFERENCE = SHARED / "reference" / "diffir-official"
_FILES = ("diffir_realsr_small.json", "diffir_realsr_small.pth",
          "diffir_realsr_small_tensors.pt", "diffir_realsr_presets.json")


@pytest.fixture(scope="session")
def diffir_reference_dir():
    missing = [f for f in _FILES if not (DIFFIR_REFERENCE / f).is_file()]
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


def tiny_config(scale: int) -> dict:
    """A ``network_g`` for a very small random model (fast on one CPU thread)."""
    return {"type": "DiffIRS2", "n_encoder_res": 1, "dim": 8, "scale": scale,
            "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2.2, "LayerNorm_type": "WithBias"}


def tiny_restorer(scale: int, seed: int = 0):
    """A DiffIRRestorer with random weights (and the configured schedule)."""
    from model.diffir.config import load_diffir_config
    from model.diffir.network import build_network
    from model.diffir.restorer import DiffIRRestorer
    from model.diffir.schedule import make_schedule
    cfg = load_diffir_config(tiny_config(scale))
    torch.manual_seed(seed)
    net = build_network(cfg)
    return DiffIRRestorer(cfg, net, make_schedule(cfg.timesteps, cfg.linear_start,
                                                  cfg.linear_end))
