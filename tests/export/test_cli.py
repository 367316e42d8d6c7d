"""``resshift export`` as a user runs it."""

from __future__ import annotations

import json

import pytest

from resshift.cli import main


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


def test_export_tensorrt_without_gpu_checks_the_graphs_then_names_what_is_missing(
        capsys, caplog, demo_restorer):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the message under test is for machines without")
    assert main(["export", "tensorrt", "demo", "--fp16", "--max-batch", "2"]) == 2
    out = capsys.readouterr().out
    assert "1 engine profile(s): unet_t64-b1-2-2-64x64-fp16" in out   # pixel-space demo
    assert "a CUDA GPU (torch sees none)" in caplog.text
    assert "pip install 'resshift-service[trt]'" in caplog.text
    assert "Traceback" not in caplog.text


def test_export_tensorrt_on_a_missing_model_directory(caplog):
    assert main(["export", "tensorrt", "models/nothing-here", "--fp16"]) == 2
    assert "no model.json" in caplog.text
