"""``resshift import-official --family diffir`` as a user runs it, on the small reference
checkpoint: a test-options YAML or a bare network_g YAML, then ``restore`` from the dir."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

import model
from resshift.cli import main
from tests.helpers.models import rel_err


@pytest.mark.parametrize("layout", ["options", "network_g"])
def test_import_writes_a_diffir_directory_that_matches_the_reference(
        tmp_path, diffir_reference_dir, diffir_small, layout):
    meta, _, tensors = diffir_small
    network_g = {"type": "DiffIRS2", **meta["config"]}
    if layout == "options":      # the authors' test YAML: scale at the top, network_g inside
        network_g.pop("scale")
        doc = {"name": "test_DiffIRS2_x4", "scale": 4, "num_gpu": 1, "network_g": network_g}
    else:
        doc = network_g
    config = tmp_path / "test.yml"
    config.write_text(yaml.safe_dump(doc))
    out = tmp_path / "diffir_small"
    assert main(["import-official", "--family", "diffir", "--config", str(config),
                 "--weights", str(diffir_reference_dir / "diffir_realsr_small.pth"),
                 "-o", str(out)]) == 0
    written = json.loads((out / "model.json").read_text())
    assert written["family"] == "diffir" and written["name"] == "diffir_small"
    assert written["provenance"]["checkpoint_file"] == "diffir_realsr_small.pth"
    assert written["provenance"]["config_file"] == "test.yml"
    restorer = model.load(out)
    assert rel_err(restorer.sample(tensors["lq"], tensors["x_T"]), tensors["sr"]) < 1e-5


def test_import_and_restore_from_the_directory(tmp_path, diffir_reference_dir, diffir_small):
    config = tmp_path / "net.yml"
    config.write_text(yaml.safe_dump({"type": "DiffIRS2", **diffir_small[0]["config"]}))
    out = tmp_path / "m"
    assert main(["import-official", "--family", "diffir", "--config", str(config), "--weights",
                 str(diffir_reference_dir / "diffir_realsr_small.pth"), "-o", str(out)]) == 0
    src, dest = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (13, 10), (90, 120, 30)).save(src)
    assert main(["restore", str(src), "-o", str(dest), "--model", str(out), "--seed", "0",
                 "-q"]) == 0
    assert Image.open(dest).size == (52, 40)


def test_import_refuses_mixed_or_missing_arguments(tmp_path, diffir_reference_dir, caplog):
    weights = str(diffir_reference_dir / "diffir_realsr_small.pth")
    out = str(tmp_path / "x")
    assert main(["import-official", "--family", "diffir", "--weights", weights, "-o", out]) == 2
    assert "--config" in caplog.text
    assert main(["import-official", "--family", "diffir", "--config", weights, "--weights",
                 weights, "--unet", weights, "-o", out]) == 2
    assert main(["import-official", "--preset", "realsr_v3", "--weights", weights,
                 "-o", out]) == 2
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"type": "DiffIRS2", "dim": 16}))
    assert main(["import-official", "--family", "diffir", "--config", str(bad), "--weights",
                 weights, "-o", out]) == 2
    assert "lacks" in caplog.text and not (tmp_path / "x").exists()
