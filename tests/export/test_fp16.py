"""float16 graphs (export.fp16): they run in onnxruntime with float32 inputs and outputs,
what float16 breaks stays float32 in the graph, they stay within the stated limits of
the float32 torch modules; the per-graph precision setting; and a graph failing its
check sends that part of a restore to torch instead of failing it."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
import torch

from export.backends import TorchBackend
from export.families import create_backend
from export.errors import ExportCheckError, ExportError
from export.fidelity import CHECK_LIMITS, code_flips, image_psnr, range_psnr, uint8_psnr
from export.fp16 import FP16_RECOMMENDED, GraphPrecisions, node_precisions
from export.graphs import unet_graph
from export.onnx import check_graph
from export.families import export_onnx
from export.ort import OrtGraph
from export.store import OnnxStore

KEPT_FP32 = ("InstanceNormalization", "Softmax", "Sin", "Cos", "ArgMin", "Pow", "ReduceSum")


@pytest.fixture(scope="module")
def small_fp16(small_restorer, tmp_path_factory):
    """The reduced-width reference model's graphs, float32 and float16."""
    return export_onnx(small_restorer, tmp_path_factory.mktemp("small16"), tiles=[64],
                       precisions="fp16")


@pytest.fixture(scope="module")
def demo_fp16(demo_restorer, tmp_path_factory):
    return export_onnx(demo_restorer, tmp_path_factory.mktemp("demo16"), tiles=[64],
                       precisions="fp16")


def _records(export) -> dict:
    return {(g["name"], g["precision"]): g for g in export.manifest["graphs"]}


def test_fp16_graphs_sit_beside_fp32_ones_in_the_manifest(small_fp16):
    files = sorted(p.name for p in small_fp16.directory.iterdir())
    assert files == ["manifest.json", "unet_t64.fp16.onnx", "unet_t64.onnx",
                     "vae_decoder.fp16.onnx", "vae_decoder.onnx", "vae_encoder.fp16.onnx",
                     "vae_encoder.onnx"]
    on_disk = json.loads((small_fp16.directory / "manifest.json").read_text())
    assert on_disk["precisions"] == "fp16"
    records = _records(small_fp16)
    for name, kind in (("unet_t64", "unet"), ("vae_encoder", "vae_encoder"),
                       ("vae_decoder", "vae_decoder")):
        for precision in ("fp32", "fp16"):
            g = records[(name, precision)]
            limits = CHECK_LIMITS[(kind, precision)]
            assert g["limits"] == limits and len(g["checks"]) == 2
            assert g["measures"]["psnr_db"] >= limits["psnr_db"]
            if "code_flips" in limits:
                assert g["measures"]["code_flips"] <= limits["code_flips"]
        assert records[(name, "fp16")]["file"] == f"{name}.fp16.onnx"
        assert records[(name, "fp16")]["fp16"]["initializers_fp16"] > 0
        # the same inputs and outputs, float32, as the float32 graph
        assert records[(name, "fp16")]["inputs"] == records[(name, "fp32")]["inputs"]
        assert records[(name, "fp16")]["outputs"] == records[(name, "fp32")]["outputs"]


@pytest.mark.parametrize("name", ["unet_t64", "vae_encoder", "vae_decoder"])
def test_fp16_graph_is_valid_and_keeps_what_fp16_breaks_in_fp32(small_fp16, name):
    path = small_fp16.directory / f"{name}.fp16.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    ops = node_precisions(proto)
    for op in KEPT_FP32:
        assert set(ops.get(op, ["fp32"])) == {"fp32"}, (op, ops.get(op))
    assert set(ops["Conv"]) == {"fp16"}
    weights = {t.name: t.data_type for t in proto.graph.initializer}
    conv_weights = [n.input[1] for n in proto.graph.node if n.op_type == "Conv"]
    assert all(weights[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    if name == "unet_t64":           # the timestep embedding: t * freqs in float32
        assert {"Sin", "Cos"} <= set(ops) and set(ops["MatMul"]) == {"fp16"}
    if name == "vae_decoder":        # the codebook lookup: distances, ArgMin, Gather
        assert set(ops["ArgMin"]) == {"fp32"}
        gathers = [n for n in proto.graph.node if n.op_type == "Gather"
                   and n.input[0] in weights]
        assert gathers and all(weights[n.input[0]] == onnx.TensorProto.FLOAT
                               for n in gathers)
    graph = OrtGraph(path)
    assert set(graph.input_types.values()) <= {torch.float32, torch.int64}
    assert graph.output_types == [torch.float32]


def test_fp16_graphs_within_limits_of_torch_on_fresh_inputs(small_fp16, small_restorer):
    ae = small_restorer.autoencoder
    codes = ae.quantize.embedding.weight.detach()
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 64, 96, generator=gen) * 2 - 1
    enc = OrtGraph(small_fp16.directory / "vae_encoder.fp16.onnx")
    with torch.no_grad():
        z_ref = ae.encode(image)
    z = enc(image=image)[0]
    assert z.dtype == torch.float32
    limits = CHECK_LIMITS[("vae_encoder", "fp16")]
    assert range_psnr(z, z_ref) >= limits["psnr_db"]
    assert code_flips(z, z_ref, codes) <= limits["code_flips"]
    dec = OrtGraph(small_fp16.directory / "vae_decoder.fp16.onnx")
    with torch.no_grad():
        ref = ae.decode(z_ref)
    assert image_psnr(dec(z=z_ref)[0], ref) >= CHECK_LIMITS[("vae_decoder", "fp16")]["psnr_db"]


def test_fp16_pixel_space_unet(demo_fp16, demo_restorer):
    assert [(g["file"], g["precision"]) for g in demo_fp16.manifest["graphs"]] == [
        ("unet_t64.onnx", "fp32"), ("unet_t64.fp16.onnx", "fp16")]
    graph = OrtGraph(demo_fp16.directory / "unet_t64.fp16.onnx")
    assert graph.input_types == {"x": torch.float32, "t": torch.int64, "lq": torch.float32}
    spec = unet_graph(demo_restorer.unet, 64, demo_restorer.latent_unit)
    checks = check_graph(spec, graph.path, precision="fp16", seed=9)
    limit = CHECK_LIMITS[("unet", "fp16")]["psnr_db"]
    assert all(c["psnr_db"] >= limit for c in checks)
    ops = node_precisions(onnx.load(str(graph.path)))
    assert set(ops["Sin"]) == set(ops["Cos"]) == {"fp32"}
    assert set(ops["InstanceNormalization"]) == {"fp32"}


def test_store_hands_out_either_precision(demo_restorer, tmp_path):
    store = OnnxStore(demo_restorer, cache=tmp_path)
    half = store.unet(64, 64, precision="fp16")
    assert half.name == "unet_t64.fp16.onnx"
    assert store.unet(64, 64) == half.with_name("unet_t64.onnx")
    assert store.graph("unet", "fp16", (64, 64)) == half
    manifest = json.loads((store.directory / "manifest.json").read_text())
    assert sorted((g["file"], g["precision"]) for g in manifest["graphs"]) == [
        ("unet_t64.fp16.onnx", "fp16"), ("unet_t64.onnx", "fp32")]
    stamp = half.stat().st_mtime_ns
    # the store's own setting picks the precision when a call names none
    assert OnnxStore(demo_restorer, cache=tmp_path, precisions="unet=fp16").unet(64, 64) == half
    assert half.stat().st_mtime_ns == stamp                 # found, not exported again
    with pytest.raises(ExportError, match="pixel-space"):
        store.decoder(precision="fp16")
    with pytest.raises(ExportError, match="precision"):
        store.unet(64, 64, precision="int8")


def test_precision_setting_parses():
    assert GraphPrecisions.parse("fp16") == GraphPrecisions("fp16", "fp16", "fp16")
    p = GraphPrecisions.parse(" unet=fp16, decoder=FP16 ")
    assert (p.unet, p.encoder, p.decoder) == ("fp16", "fp32", "fp16")
    assert str(p) == "unet=fp16,encoder=fp32,decoder=fp16"
    assert GraphPrecisions.parse(str(p)) == p and str(GraphPrecisions()) == "fp32"
    assert p.of("vae_decoder") == "fp16" and p.of("vae_encoder") == "fp32"
    assert p.of("diffir") == "fp32"
    assert FP16_RECOMMENDED.any_fp16


@pytest.mark.parametrize("text, message", [
    ("fp8", "unknown precision 'fp8'"),
    ("unet=int8", "unknown precision 'int8' for unet"),
    ("vae=fp16", "unknown graph 'vae'"),
    ("unet=fp16,unet=fp32", "given twice"),
    ("unet:fp16,decoder=fp16", "is not graph=precision"),
    ("", "empty graph precision"),
])
def test_precision_setting_rejects_bad_strings(text, message):
    with pytest.raises(ValueError, match=message) as info:
        GraphPrecisions.parse(text)
    assert "use fp32" in str(info.value) or "twice" in message     # says what to write


def test_cli_rejects_a_bad_precision(caplog):
    from resshift.cli import main
    assert main(["export", "onnx", "demo", "--out", "/nonexistent/x",
                 "--precision", "unet=fp61"]) == 2
    assert "unknown precision 'fp61' for unet" in caplog.text


def test_failed_check_runs_that_part_on_torch_and_warns_once(demo_restorer, tmp_path,
                                                             monkeypatch, caplog):
    """An absurd UNet limit (PSNR >= 1000 dB): the real check fails, the restore runs the
    UNet on torch and equals the torch restore; one warning names graph and number."""
    monkeypatch.setitem(CHECK_LIMITS, ("unet", "fp32"), {"psnr_db": 1000.0})
    image = (np.random.default_rng(4).random((16, 16, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING, logger="resshift.export"):
        backend = create_backend("onnxruntime", demo_restorer, cache=tmp_path)
        assert "unet on torch" in backend.prepare([(64, 64)])
        runner = demo_restorer.using(backend)
        first = runner.restore(image, seed=1)
        second = runner.restore(image, seed=1)
    ref = demo_restorer.using(TorchBackend(demo_restorer, "fp32")).restore(image, seed=1)
    assert np.array_equal(first, ref) and np.array_equal(second, ref)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "unet_t64.onnx" in warnings[0] and "PSNR" in warnings[0]
    assert "< limit 1000 dB" in warnings[0] and "runs on torch" in warnings[0]
    assert "on torch after a failed graph check: unet" in backend.describe()
    # no graph was kept for the failed check
    assert not list(tmp_path.rglob("unet_t64.onnx"))


def test_failed_check_during_a_restore_falls_back_too(small_restorer, tmp_path,
                                                      monkeypatch, caplog):
    """Latent model, no prepare: the decoder graph fails on first use, mid-restore."""
    monkeypatch.setitem(CHECK_LIMITS, ("vae_decoder", "fp32"), {"psnr_db": 1000.0})
    image = (np.random.default_rng(2).random((16, 16, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING, logger="resshift.export"):
        backend = create_backend("onnxruntime", small_restorer, cache=tmp_path)
        got = small_restorer.using(backend).restore(image, seed=2)
    ref = small_restorer.restore(image, seed=2)
    assert uint8_psnr(got, ref) >= 40.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "vae_decoder.onnx" in warnings[0], warnings
    assert set(backend.failed) == {"decoder"}
    # the UNet and encoder still ran in onnxruntime
    assert {"encoder"} <= set(backend.inner._sessions)
    assert any(k.startswith("unet") for k in backend.inner._sessions)


def test_check_error_names_the_measure(demo_onnx, demo_restorer):
    spec = unet_graph(demo_restorer.unet, 64, demo_restorer.latent_unit)
    strict = {("unet", "fp32"): {"psnr_db": 1000.0}}
    with pytest.raises(ExportCheckError) as info:
        check_graph(spec, demo_onnx.directory / "unet_t64.onnx", limits=strict)
    err = info.value
    assert err.measure == "psnr_db" and err.tolerance == 1000.0 and 60 < err.value < 1000
    assert "PSNR" in str(err) and "< limit 1000 dB" in str(err)
