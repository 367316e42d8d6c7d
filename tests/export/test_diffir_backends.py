"""DiffIR on onnxruntime: ``--backend onnxruntime`` gives torch's image (same seed, float32)
for a whole image and a tiled one, the graphs are exported on first use beside the model
(or into the cache), tiles keep the image's one IPR, and ``auto``'s choice says why."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import model
from export.families import choose_backend, create_backend
from export.diffir_backend import DiffIROnnxBackend
from export.errors import BackendUnavailable
from export.manifest import read_manifest
from resshift.cli import main
from model.diffir.stepper import DiffIRJob
from model.diffir.tiling import DiffIRTiling
from model.imageio import decode_image
from tests.helpers.images import psnr
from tests.helpers.models import rel_err, tiny_diffir

PSNR_MIN = 45.0
REL_ERR_MAX = 1e-4        # the export check's bar, held by restore-level outputs too


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A small random x4 DiffIR model directory (no onnx/ folder yet)."""
    r = tiny_diffir(4, seed=2)
    r.name = "tiny_x4"
    return model.save(r, tmp_path_factory.mktemp("models") / "tiny_x4")


def _png(path, h, w, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _restore(src, out, model_dir, backend, capsys, *extra) -> tuple[np.ndarray, str]:
    code = main(["restore", str(src), "-o", str(out), "--model", str(model_dir), "--seed", "3",
                 "-q", "--backend", backend, *extra])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    return decode_image(out).pixels, stdout


def _graphs(directory) -> list[str]:
    return [g["name"] for g in read_manifest(directory)["graphs"]]


def test_cli_whole_image_on_onnxruntime_is_torchs(tiny_dir, tmp_path, capsys):
    src = _png(tmp_path / "in.png", 21, 30, seed=0)       # padded to 24x32: runs whole
    ref, _ = _restore(src, tmp_path / "torch.png", tiny_dir, "torch", capsys)
    got, out = _restore(src, tmp_path / "ort.png", tiny_dir, "onnxruntime", capsys)
    assert f"backend: onnxruntime (CPU, float32, graphs in {tiny_dir / 'onnx'})" in out
    assert ref.shape == got.shape == (84, 120, 3)
    assert psnr(got, ref) >= PSNR_MIN, psnr(got, ref)
    # the whole-image graph only: the DIRformer-only graph waits for a tiled input
    assert _graphs(tiny_dir / "onnx") == ["diffir_s2"]


def test_cli_tiled_image_on_onnxruntime_is_torchs(tiny_dir, tmp_path, capsys):
    src = _png(tmp_path / "in.png", 37, 45, seed=1)
    ref, _ = _restore(src, tmp_path / "torch.png", tiny_dir, "torch", capsys, "--tile", "16")
    got, _ = _restore(src, tmp_path / "ort.png", tiny_dir, "onnxruntime", capsys,
                      "--tile", "16")
    assert ref.shape == got.shape == (148, 180, 3)
    assert psnr(got, ref) >= PSNR_MIN, psnr(got, ref)
    assert sorted(_graphs(tiny_dir / "onnx")) == ["diffir_dirformer", "diffir_s2"]
    manifest = read_manifest(tiny_dir / "onnx")
    assert all(g["rel_err"] < REL_ERR_MAX for g in manifest["graphs"])


def test_using_runs_whole_and_tiled_samples_like_torch(cache):
    """In memory (no model dir): graphs go to the cache; the original stays on torch."""
    r = tiny_diffir(4, seed=5)
    backend = create_backend("onnxruntime", r)
    assert isinstance(backend, DiffIROnnxBackend)
    assert backend.store.directory.parent == cache / "onnx"
    view = r.using(backend)
    assert r.backend is None and view.backend is backend
    gen = torch.Generator().manual_seed(0)
    lq, noise = torch.rand(2, 3, 29, 35, generator=gen), torch.randn(2, 256, generator=gen)
    assert rel_err(view.sample(lq, noise), r.sample(lq, noise)) < REL_ERR_MAX
    # the policy lowered so that this small input tiles: 16x16 tiles, one IPR per image
    tiles = DiffIRTiling(max_whole_pixels=16 * 16, tile=16, overlap=8)
    plan = r.plan(32, 40, tiles)
    assert len(plan.boxes) > 1
    tiled = view.sample(lq, noise, tiles=tiles)
    assert tiled.shape == (2, 3, 116, 140)
    assert rel_err(tiled, r.sample(lq, noise, tiles=tiles)) < REL_ERR_MAX
    assert sorted(p.name for p in backend.store.directory.glob("*.onnx")) == [
        "diffir_dirformer.onnx", "diffir_s2.onnx"]


def test_service_job_runs_its_tiles_on_the_backend(cache):
    r = tiny_diffir(4, seed=5)
    view = r.using(create_backend("onnxruntime", r))
    image = np.random.default_rng(4).integers(0, 256, (33, 27, 3), dtype=np.uint8)
    got = DiffIRJob(view, image, seed=9, tile=16).run()
    assert psnr(got, r.restore(image, seed=9, tile=16)) >= PSNR_MIN


def test_auto_names_its_choice_and_why(cache, caplog):
    r = tiny_diffir(4)
    name, why = choose_backend(r)
    assert name in ("torch", "onnxruntime") and "measured" in why
    with caplog.at_level(logging.INFO, logger="resshift.export"):
        backend = create_backend("auto", r)
    assert backend.name == name and f"backend auto -> {name}: {why}" in caplog.text


def test_tensorrt_is_refused_for_diffir():
    with pytest.raises(BackendUnavailable, match="torch or onnxruntime"):
        create_backend("tensorrt", tiny_diffir(4))
