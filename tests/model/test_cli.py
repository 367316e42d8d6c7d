"""``resshift import-official`` and ``resshift restore`` as a user runs them."""

import json

import pytest
import yaml
from PIL import Image

from resshift.cli import main


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory, reference_dir):
    meta = json.loads((reference_dir / "realsr_small.json").read_text())
    cfg_path = tmp_path_factory.mktemp("cfg") / "realsr_small.yaml"
    cfg_path.write_text(yaml.safe_dump({k: {"params": v} for k, v in meta["config"].items()}))
    out = tmp_path_factory.mktemp("models") / "small"
    code = main(["import-official", "--config", str(cfg_path),
                 "--unet", str(reference_dir / "realsr_small_unet.pth"),
                 "--autoencoder", str(reference_dir / "realsr_small_autoencoder.pth"),
                 "-o", str(out)])
    assert code == 0
    return out


def test_import_writes_a_model_directory(small_model_dir):
    meta = json.loads((small_model_dir / "model.json").read_text())
    assert meta["family"] == "resshift" and meta["task"] == "sr" and meta["scale"] == 4
    assert meta["provenance"]["unet_file"] == "realsr_small_unet.pth"


def test_restore_single_file_is_4x(tmp_path, small_model_dir, data_dir):
    src = tmp_path / "crop.png"
    Image.open(data_dir / "realset80" / "0003.jpg").convert("RGB").crop((0, 0, 45, 70)).save(src)
    dest = tmp_path / "out.png"
    assert main(["restore", str(src), "-o", str(dest), "--model", str(small_model_dir),
                 "--seed", "0", "-q"]) == 0
    assert Image.open(dest).size == (180, 280)


def test_restore_folder_keeps_names_and_reports_bad_files(tmp_path, small_model_dir, capsys):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    Image.new("RGBA", (24, 20), (200, 10, 10, 128)).save(inp / "sub" / "rgba.png")
    Image.new("L", (16, 16), 90).save(inp / "gray.jpg")
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main(["restore", str(inp), "-o", str(out), "--model", str(small_model_dir), "-q"])
    assert code == 1                                    # one failure, the rest done
    assert Image.open(out / "sub" / "rgba.png").size == (96, 80)
    assert Image.open(out / "gray.jpg").size == (64, 64)
    assert not (out / "broken.png").exists()
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 of 3" in captured.out


def test_restore_rejects_wrong_task_and_missing_model(tmp_path, small_model_dir, caplog):
    src = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(src)
    assert main(["restore", str(src), "-o", str(tmp_path / "o.png"), "--model",
                 str(small_model_dir), "--task", "inpaint", "-q"]) == 2
    caplog.clear()
    assert main(["restore", str(src), "-o", str(tmp_path / "o.png"), "--model",
                 str(tmp_path / "nope"), "-q"]) == 2
    # The refusal says how to get a model there, and that the bundled one needs no flag.
    assert "no model.json" in caplog.text
    assert "resshift import-official --preset realsr_v3" in caplog.text
    assert f"-o {tmp_path / 'nope'}" in caplog.text
    assert "bundled demo model `demo`" in caplog.text and "--model is omitted" in caplog.text
    caplog.clear()
    # A folder named after a preset is told that preset's official files.
    assert main(["restore", str(src), "-o", str(tmp_path / "o.png"), "--model",
                 str(tmp_path / "faceir"), "-q"]) == 2
    assert ("--preset faceir --unet resshift_faceir_s4.pth --autoencoder "
            "ffhq512_vq_f8_dim8_face.pth") in caplog.text


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    assert "examples" in capsys.readouterr().out
