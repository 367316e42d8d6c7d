"""The released models' state-dict layouts, built on the meta device (no memory)."""

from __future__ import annotations

import pytest

from model.diffir.checkpoint import official_layout, primary_key
from model.diffir.config import load_diffir_config
from model.diffir.network import build_network


def _differences(ours: dict, theirs: dict) -> list[str]:
    out = [f"missing {k}" for k in theirs if k not in ours]
    out += [f"extra {k}" for k in ours if k not in theirs]
    out += [f"{k}: ours {ours[k]} vs {theirs[k]}" for k in theirs
            if k in ours and ours[k] != theirs[k]]
    return out


@pytest.mark.parametrize("name", ["realsr_x4", "realsr_x2", "realsr_x1"])
def test_preset_layout_matches_official(diffir_presets, name):
    preset = diffir_presets[name]
    cfg = load_diffir_config({"type": "DiffIRS2", **preset["config"]})
    net = build_network(cfg, "meta")
    theirs = {k: tuple(shape) for k, shape in preset["state_dict_layout"]}
    assert _differences(official_layout(net, cfg.timesteps), theirs)[:5] == []
    assert sum(p.numel() for p in net.parameters()) == preset["parameters"]


def test_small_layout_and_aliases(diffir_small):
    meta = diffir_small[0]
    cfg = load_diffir_config(meta["config"])
    net = build_network(cfg, "meta")
    theirs = {k: tuple(shape) for k, shape in meta["layout"]}
    assert _differences(official_layout(net, cfg.timesteps), theirs)[:5] == []
    assert sorted(n for n, _ in net.named_parameters()) == sorted(meta["parameter_keys"])
    for alias, primary in meta["aliases"].items():
        assert primary_key(alias) == primary
