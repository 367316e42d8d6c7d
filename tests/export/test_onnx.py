"""ONNX export: graphs of the small reference model and the demo pass the onnxruntime
check (rel. error < 1e-4 vs float32 torch), a 4-step sample on the ONNX UNet matches
torch, and the check fails on a graph that does not match its model."""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch

from export.errors import ExportCheckError, ExportError
from export.graphs import unet_graph
from export.manifest import read_manifest, weights_hash
from export.families import export_onnx
from export.onnx import TOLERANCE, check_graph, write_graph
from export.ort import OnnxUNet, OrtGraph
from model.denoiser import X0Denoiser
from model.nets.unet import SwinUNet
from model.sampler import draw_noises, sample
from tests.helpers.models import rel_err


def test_small_model_exports_three_checked_graphs(small_onnx, small_model_dir, small_restorer):
    assert small_onnx.directory == small_model_dir / "onnx"
    files = sorted(p.name for p in small_onnx.directory.iterdir())
    assert files == ["manifest.json", "unet_t64.onnx", "vae_decoder.onnx", "vae_encoder.onnx"]
    manifest = read_manifest(small_onnx.directory)
    assert manifest == json.loads(json.dumps(small_onnx.manifest))
    assert manifest["opset"] == 17 and manifest["tiles"] == [64]
    assert set(manifest["versions"]) == {"torch", "onnx", "onnxruntime"}
    assert manifest["model"]["weights_sha256"] == weights_hash(
        [small_restorer.unet, small_restorer.autoencoder])
    graphs = {g["name"]: g for g in manifest["graphs"]}
    assert set(graphs) == {"unet_t64", "vae_encoder", "vae_decoder"}
    for g in graphs.values():
        assert g["rel_err"] < TOLERANCE and len(g["checks"]) == 2
        proto = onnx.load(str(small_onnx.directory / g["file"]))
        assert proto.opset_import[0].version == 17
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}      # no custom ops
    unet = graphs["unet_t64"]
    assert [i["name"] for i in unet["inputs"]] == ["x", "t", "lq"]
    assert unet["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    assert unet["inputs"][1] == {"name": "t", "shape": ["batch"], "dtype": "int64"}
    assert graphs["vae_encoder"]["inputs"][0]["shape"] == ["batch", 3, "height", "width"]
    assert graphs["vae_decoder"]["outputs"][0]["shape"] == ["batch", 3, "height", "width"]
    # the second VAE check ran at another batch and size (the axes really are dynamic)
    assert graphs["vae_decoder"]["checks"][1]["shapes"]["z"] == [2, 3, 32, 48]


def test_vae_graphs_match_restorer_encode_and_decode(small_onnx, small_restorer):
    ae = small_restorer.autoencoder
    image = torch.rand(1, 3, 96, 160) * 2 - 1
    enc = OrtGraph(small_onnx.directory / "vae_encoder.onnx")
    z = enc(image=image)[0]
    assert rel_err(z, ae.encode(image).detach()) < TOLERANCE
    dec = OrtGraph(small_onnx.directory / "vae_decoder.onnx")
    codes = ae.quantize.embedding.weight.detach()
    z = codes[torch.randint(0, codes.shape[0], (1, 24, 40))].permute(0, 3, 1, 2) * 1.02
    with torch.no_grad():
        ref = small_restorer.decode(z.contiguous())
    assert rel_err(dec(z=z)[0], ref) < TOLERANCE


def test_demo_exports_only_its_unet(demo_onnx):
    manifest = demo_onnx.manifest
    assert manifest["model"]["space"] == "pixel"
    assert [g["file"] for g in manifest["graphs"]] == ["unet_t64.onnx"]
    assert manifest["graphs"][0]["rel_err"] < TOLERANCE


@pytest.mark.parametrize("which", ["small", "demo"])
def test_four_step_sample_on_onnx_unet_matches_torch(which, request):
    restorer = request.getfixturevalue(f"{which}_restorer")
    exported = request.getfixturevalue(f"{which}_onnx")
    onnx_unet = X0Denoiser(OnnxUNet(OrtGraph(exported.directory / "unet_t64.onnx")),
                           restorer.schedule, latent=restorer.latent,
                           predict_type=restorer.predict_type)
    gen = torch.Generator().manual_seed(0)
    c = restorer.unet.in_channels
    y = torch.rand(2, c, 64, 64, generator=gen) * 2 - 1
    lq = y[:, :3] if which == "demo" else torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    noises = draw_noises(y.shape, restorer.steps + 1, gen)
    kw = dict(lq=lq, noises=noises, clip_denoised=not restorer.latent)
    assert restorer.schedule.num_steps == 4
    with torch.no_grad():
        ref = sample(restorer.denoiser(), y, restorer.schedule, **kw)
    got = sample(onnx_unet, y, restorer.schedule, **kw)
    assert rel_err(got, ref) < TOLERANCE


def _perturbed(unet: torch.nn.Module) -> torch.nn.Module:
    broken = copy.deepcopy(unet)
    with torch.no_grad():
        conv = broken.input_blocks[0][0]
        conv.weight.add_(0.05 * torch.randn(conv.weight.shape,
                                            generator=torch.Generator().manual_seed(0)))
    return broken


def test_check_fails_against_a_different_model(demo_onnx, demo_restorer):
    spec = unet_graph(_perturbed(demo_restorer.unet), 64, demo_restorer.latent_unit)
    with pytest.raises(ExportCheckError) as info:
        check_graph(spec, demo_onnx.directory / "unet_t64.onnx")
    err = info.value
    assert err.rel_err > TOLERANCE and err.graph == "unet_t64.onnx"
    assert "relative error" in str(err) and "x[1, 3, 64, 64]" in str(err)


def test_a_graph_that_fails_its_check_is_not_kept(demo_restorer, tmp_path, monkeypatch):
    import export.onnx as exp
    good = unet_graph(demo_restorer.unet, 64, demo_restorer.latent_unit)
    bad = unet_graph(_perturbed(demo_restorer.unet), 64, demo_restorer.latent_unit)
    trace = exp._trace_to_onnx
    monkeypatch.setattr(exp, "_trace_to_onnx", lambda spec, path, opset: trace(bad, path, opset))
    with pytest.raises(ExportCheckError):
        write_graph(good, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mask_conditioned_unet_exports_with_a_mask_input(tmp_path):
    torch.manual_seed(0)
    unet = SwinUNet(image_size=32, in_channels=3, model_channels=32, out_channels=3,
                    attention_resolutions=[32, 16], channel_mult=[1, 2], num_res_blocks=[1, 1],
                    swin_depth=2, swin_embed_dim=32, num_head_channels=16, window_size=8,
                    cond_lq=True, cond_mask=True, lq_size=32).eval()
    with torch.no_grad():                # zero-initialised output convs: make them count
        for p in unet.parameters():
            if p.dim() > 1:
                p.normal_(std=0.05)
    record = write_graph(unet_graph(unet, 32, 16), tmp_path, opset=18)
    assert [i["name"] for i in record["inputs"]] == ["x", "t", "lq", "mask"]
    assert record["rel_err"] < TOLERANCE
    assert onnx.load(str(tmp_path / "unet_t32.onnx")).opset_import[0].version == 18


def test_bad_settings_are_export_errors(demo_restorer, tmp_path):
    with pytest.raises(ExportError, match="multiple of 32"):
        export_onnx(demo_restorer, tmp_path, tiles=[48])
    with pytest.raises(ExportError, match="opset 16"):
        export_onnx(demo_restorer, tmp_path, tiles=[64], opset=16)
    with pytest.raises(ExportError, match="at least one tile"):
        export_onnx(demo_restorer, tmp_path, tiles=[])
    assert list(tmp_path.iterdir()) == []
