"""``resshift export`` as a user runs it."""

from __future__ import annotations

import json

from model.cli import main


def test_export_onnx_demo_with_out(tmp_path, capsys, demo_restorer):
    out = tmp_path / "demo-onnx"
    assert main(["export", "onnx", "demo", "--tile", "64", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[1/1] unet_t64.onnx") and "rel. error" in line
               for line in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tiles"] == [64] and manifest["graphs"][0]["rel_err"] < 1e-4


def test_export_onnx_refuses_to_write_into_the_bundled_model(capsys, caplog):
    assert main(["export", "onnx", "demo"]) == 2
    assert "--out" in caplog.text


def test_export_tensorrt_is_not_available_yet(caplog):
    assert main(["export", "tensorrt", "models/x", "--fp16"]) == 2
    assert "not available yet" in caplog.text
