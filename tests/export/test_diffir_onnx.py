"""ONNX export of DiffIR S2: the whole forward (CPEN, the 4 IPR steps, DIRformer) as one
graph with the prior draw as an input, checked against torch (rel. error < 1e-4),
reproducing the official ``sr`` of diffir_realsr_small, dynamic in batch and size."""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch

import model
from export.diffir_graph import diffir_graph
from export.errors import ExportCheckError, ExportError
from export.manifest import read_manifest, weights_hash
from export.onnx import TOLERANCE, check_graph
from export.families import export_model_dir, export_onnx
from export.ort import OrtGraph
from resshift.cli import main
from model.restorer import pad_to_multiple
from tests.helpers.models import rel_err, tiny_diffir

SIZE = 32      # the reference LQ side; a multiple of the x4 model's input multiple (8)


@pytest.fixture(scope="module")
def diffir_model_dir(diffir_small_restorer, tmp_path_factory):
    return model.save(diffir_small_restorer, tmp_path_factory.mktemp("models") / "diffir_small")


@pytest.fixture(scope="module")
def diffir_onnx(diffir_model_dir):
    """``export_model_dir`` of the saved small DiffIR model into MODEL_DIR/onnx."""
    return export_model_dir(diffir_model_dir, tiles=[SIZE])


@pytest.fixture(scope="module")
def diffir_session(diffir_onnx):
    return OrtGraph(diffir_onnx.paths[0])


def test_model_dir_exports_one_checked_dynamic_graph(diffir_onnx, diffir_model_dir,
                                                     diffir_small_restorer):
    assert diffir_onnx.directory == diffir_model_dir / "onnx"
    assert sorted(p.name for p in diffir_onnx.directory.iterdir()) == ["diffir_s2.onnx",
                                                                      "manifest.json"]
    manifest = read_manifest(diffir_onnx.directory)
    assert manifest == json.loads(json.dumps(diffir_onnx.manifest))
    m = manifest["model"]
    assert (m["family"], m["scale"], m["input_multiple"], m["steps"]) == ("diffir", 4, 8, 4)
    assert m["weights_sha256"] == weights_hash([diffir_small_restorer.network])
    assert manifest["opset"] == 17 and manifest["tiles"] == []
    (graph,) = manifest["graphs"]
    assert graph["kind"] == "diffir" and graph["export_size"] == SIZE
    assert graph["inputs"] == [
        {"name": "lq", "shape": ["batch", 3, "height", "width"], "dtype": "float32"},
        {"name": "noise", "shape": ["batch", 256], "dtype": "float32"}]
    assert graph["outputs"][0]["shape"] == ["batch", 3, "out_height", "out_width"]
    # checked at the export shape and at another batch and (non-square) size
    assert [c["shapes"]["lq"] for c in graph["checks"]] == [[1, 3, 32, 32], [2, 3, 40, 64]]
    assert graph["rel_err"] < TOLERANCE
    proto = onnx.load(str(diffir_onnx.paths[0]))
    assert proto.opset_import[0].version == 17
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    # the IPR loop is unrolled inside the graph: no control flow left for runtimes
    assert not {n.op_type for n in proto.graph.node} & {"Loop", "If", "Scan"}


def test_graph_reproduces_the_official_sr(diffir_session, diffir_small):
    t = diffir_small[2]
    (sr,) = diffir_session(lq=t["lq"], noise=t["x_T"])
    assert sr.shape == t["sr"].shape
    assert rel_err(sr, t["sr"]) < 1e-4


def test_graph_matches_sample_at_another_size_and_batch(diffir_session, diffir_small_restorer):
    """Odd 21x30 inputs, batch 2: pad outside the graph, crop after, as ``sample`` does."""
    gen = torch.Generator().manual_seed(3)
    lq = torch.rand((2, 3, 21, 30), generator=gen)
    noise = torch.randn((2, 256), generator=gen)
    padded = pad_to_multiple(lq, diffir_small_restorer.input_multiple)
    assert tuple(padded.shape[-2:]) == (24, 32)
    (out,) = diffir_session(lq=padded, noise=noise)
    out = out[..., :21 * 4, :30 * 4]
    ref = diffir_small_restorer.sample(lq, noise)
    assert out.shape == ref.shape == (2, 3, 84, 120)
    assert rel_err(out, ref) < 1e-4


def test_check_fails_against_a_different_model(diffir_onnx, diffir_small_restorer):
    other = copy.deepcopy(diffir_small_restorer)
    with torch.no_grad():
        for p in other.network.G.tail.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with pytest.raises(ExportCheckError) as info:
        check_graph(diffir_graph(other, SIZE), diffir_onnx.paths[0])
    assert info.value.rel_err > TOLERANCE and info.value.graph == "diffir_s2.onnx"
    assert "lq[1, 3, 32, 32]" in str(info.value)


@pytest.mark.parametrize("scale", [2, 1])
def test_unshuffled_scales_export_dynamic_graphs(scale, tmp_path):
    """x2 / x1 models pixel-unshuffle the LQ (input multiples 16 / 32)."""
    r = tiny_diffir(scale)
    result = export_onnx(r, tmp_path, tiles=[r.input_multiple])
    checks = result.manifest["graphs"][0]["checks"]
    m = r.input_multiple
    assert [c["shapes"]["lq"] for c in checks] == [[1, 3, m, m], [2, 3, 2 * m, 2 * m]]
    assert all(c["rel_err"] < TOLERANCE for c in checks)


def test_bad_sizes_are_refused(diffir_small_restorer, tmp_path):
    with pytest.raises(ExportError, match="multiple of 8"):
        export_onnx(diffir_small_restorer, tmp_path, tiles=[20])
    with pytest.raises(ExportError, match="one spatially dynamic graph"):
        export_onnx(diffir_small_restorer, tmp_path, tiles=[32, 64])
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_a_diffir_model_dir(diffir_model_dir, tmp_path, capsys):
    out = tmp_path / "diffir-onnx"
    assert main(["export", "onnx", str(diffir_model_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("[1/1] diffir_s2.onnx: lq batchx3xheightxwidth")
               and "rel. error" in line for line in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["family"] == "diffir"
    assert manifest["graphs"][0]["export_size"] == 64 and manifest["graphs"][0]["rel_err"] < 1e-4
