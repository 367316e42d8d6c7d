"""Clear errors for configs and checkpoints that do not fit."""

from __future__ import annotations

import pytest
import torch

import model
from model.errors import CheckpointError, ConfigError

from tests.helpers.models import tiny_diffir_config


def test_wrong_checkpoint_names_the_keys(diffir_small, diffir_presets):
    """The small checkpoint against the released x4 config: mis-shaped and missing keys."""
    ckpt = diffir_small[1]
    config = {"type": "DiffIRS2", **diffir_presets["realsr_x4"]["config"]}
    with pytest.raises(CheckpointError) as info:
        model.import_diffir(config, ckpt)
    msg = str(info.value)
    assert "DiffIR checkpoint does not fit" in msg
    assert "missing: G.encoder_level1.1.norm1.body.weight" in msg
    assert "mis-shaped: G.patch_embed.proj.weight (16, 3, 3, 3) (network wants (64, 3, 3, 3))" \
        in msg


def test_unexpected_key(diffir_small):
    meta, ckpt, _ = diffir_small
    state = dict(ckpt["params_ema"], **{"G.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected: G.extra.weight"):
        model.import_diffir(meta["config"], state)


def test_alias_that_disagrees_with_its_primary(diffir_small):
    meta, ckpt, _ = diffir_small
    state = dict(ckpt["params_ema"])
    state["diffusion.model.resmlp.0.bias"] = state["denoise.resmlp.0.bias"] + 1
    with pytest.raises(CheckpointError, match="diffusion.model.resmlp.0.bias should be a copy"):
        model.import_diffir(meta["config"], state)


def test_alias_alone_stands_in_for_its_primary(diffir_small):
    meta, ckpt, t = diffir_small
    state = {k: v for k, v in ckpt["params_ema"].items() if not k.startswith("denoise.")}
    r = model.import_diffir(meta["config"], state)
    assert torch.equal(r.network.denoise.resmlp[0].bias,
                       ckpt["params_ema"]["denoise.resmlp.0.bias"])


def test_schedule_that_disagrees_with_the_config(diffir_small):
    meta, ckpt, _ = diffir_small
    config = dict(meta["config"], linear_end=0.5)
    with pytest.raises(CheckpointError, match="differs from the configured one"):
        model.import_diffir(config, ckpt)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        model.import_diffir(tiny_diffir_config(4), bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        model.import_diffir(tiny_diffir_config(4), tmp_path / "nope.pth")


@pytest.mark.parametrize("change, message", [
    ({"n_blocks": 3}, "unknown DiffIRS2 argument"),
    ({"type": "DiffIRS1"}, "only DiffIRS2"),
    ({"LayerNorm_type": "Batch"}, "BiasFree or WithBias"),
    ({"scale": 3}, "scale must be one of"),
    ({"heads": [1, 2, 4]}, "heads must list 4 integers"),
    ({"heads": [3, 2, 4, 8]}, "not divisible by heads"),
    ({"dim": "64"}, "dim must be an integer"),
    ({"bias": "no"}, "bias must be true or false"),
    ({"inp_channels": 1}, "must be 3"),
])
def test_bad_config(change, message):
    with pytest.raises(ConfigError, match=message):
        model.import_diffir(dict(tiny_diffir_config(4), **change), {})


def test_missing_config_argument():
    config = tiny_diffir_config(4)
    del config["dim"], config["heads"]
    with pytest.raises(ConfigError, match="lacks dim, heads"):
        model.import_diffir(config, {})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        model.import_diffir(tmp_path / "none.yml", {})
    bad = tmp_path / "bad.yml"
    bad.write_text("network_g: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        model.import_diffir(bad, {})


def test_config_round_trips():
    from model.diffir.config import load_diffir_config
    cfg = load_diffir_config(tiny_diffir_config(2))
    assert load_diffir_config(cfg.to_official()) == cfg
