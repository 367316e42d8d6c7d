"""DiffIR model directories: model.json names the family, save -> load gives the same
pixels, and ``model.load`` / ``model.save`` pick the implementation by family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model
from model.diffir import DiffIRRestorer
from model.errors import CheckpointError, ConfigError
from model.restorer import Restorer

from tests.helpers.models import tiny_diffir, tiny_diffir_config, tiny_restorer


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    r = tiny_diffir(4, seed=3)
    r.name, r.provenance = "tiny-diffir", {"source": "test"}
    return r, model.save(r, tmp_path_factory.mktemp("diffir") / "tiny")


def test_model_json_names_the_family_and_the_network(saved):
    _, path = saved
    meta = json.loads((path / "model.json").read_text())
    assert meta["family"] == "diffir" and meta["task"] == "sr" and meta["scale"] == 4
    assert meta["input_multiple"] == 8 and meta["steps"] == 4 and meta["name"] == "tiny-diffir"
    assert meta["network_g"] == {**tiny_diffir_config(4), "inp_channels": 3, "out_channels": 3,
                                 "bias": False, "n_denoise_res": 1, "linear_start": 0.1,
                                 "linear_end": 0.99, "timesteps": 4}
    assert meta["provenance"]["source"] == "test" and "written" in meta["provenance"]
    assert sorted(p.name for p in path.iterdir()) == ["diffir.safetensors", "model.json"]


def test_round_trip_gives_the_same_pixels(saved):
    r, path = saved
    loaded = model.load(path)
    assert isinstance(loaded, DiffIRRestorer) and loaded.family == "diffir"
    assert loaded.config == r.config and loaded.name == "tiny-diffir"
    assert torch.equal(loaded.schedule.coef1, r.schedule.coef1)
    image = np.random.default_rng(1).integers(0, 256, (13, 19, 3), dtype=np.uint8)
    assert np.array_equal(loaded.restore(image, seed=5), r.restore(image, seed=5))


def test_resshift_directories_still_load_as_resshift(tmp_path):
    path = model.save(tiny_restorer("sr"), tmp_path / "rs")
    assert json.loads((path / "model.json").read_text())["family"] == "resshift"
    assert isinstance(model.load(path), Restorer)


def test_bad_directories_say_what_is_wrong(saved, tmp_path):
    _, path = saved
    meta = json.loads((path / "model.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "diffir.safetensors").write_bytes((path / "diffir.safetensors").read_bytes())
    (bad / "model.json").write_text(json.dumps({**meta, "family": "gan"}))
    with pytest.raises(ConfigError, match="'gan'"):
        model.load(bad)
    (bad / "model.json").write_text(json.dumps({**meta, "scale": 2}))
    with pytest.raises(ConfigError, match="scale 2"):
        model.load(bad)
    (bad / "model.json").write_text(json.dumps({**meta, "network_g": {**meta["network_g"],
                                                                      "dim": 16}}))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        model.load(bad)
