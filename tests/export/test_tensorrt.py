"""TensorRT engines: profiles, keys, module resolution and the runtime's pure helpers on
any machine; parsing and building the reduced-width latent model's UNet, encoder and
decoder with TensorRT-RTX (it builds ahead of time without a GPU); engines against torch
float32 on a GPU (``-m gpu``)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.bench import RANDOM_SMALL, load_restorer
from export.errors import BackendUnavailable, ExportError
from export.tensorrt import (MODULE_ENV, BuildRecipe, EngineProfile, TensorRTDevice,
                             _import, _write_atomic, build_engines, default_max_batch,
                             engine_key, engine_path, probe_tensorrt, profiles_for,
                             resolve_tensorrt_module, timing_cache_path, unavailable_reason,
                             unet_profile)
from export.trt_runtime import (ShapeOutsideProfile, batch_chunks, check_shape,
                                output_shape, torch_dtype)

HAS_CUDA = torch.cuda.is_available()
try:
    import tensorrt_rtx
except Exception:          # not installed, or its libraries fail to load
    tensorrt_rtx = None
needs_rtx = pytest.mark.skipif(tensorrt_rtx is None, reason="tensorrt_rtx cannot be imported")
TARGET = "8.6"             # an RTX ahead-of-time target; no GPU needed to build for it


@pytest.fixture(scope="module")
def small():
    """realsr_v3's architecture at reduced width, seeded random weights, CPU float32."""
    return load_restorer(RANDOM_SMALL, "cpu")


@pytest.fixture(scope="module")
def small_dir(small, tmp_path_factory):
    """``small`` as a model directory: its graphs and engines go beside it, shared by the
    tests below (exported once)."""
    import model
    return model.save(small, tmp_path_factory.mktemp("trt") / "small")


# -- profiles ----------------------------------------------------------------------------
def test_profiles_unet_tile_and_vae_spatial_range(small):
    unet, enc, dec = profiles_for(small, 64, max_batch=8)
    assert (unet.graph, unet.batch, unet.tile, unet.min_tile) == (
        "unet_t64", (1, 8, 8), (64, 64), None)
    f, unit = small.factor, small.latent_unit           # 4, 64
    # the VAE: from the smallest padded image (one latent unit) up to one VAE tile
    assert (enc.graph, enc.spatial) == ("vae_encoder", ((unit * f,) * 2, (512, 512)))
    assert (dec.graph, dec.spatial) == ("vae_decoder", ((unit,) * 2, (512 // f,) * 2))
    assert enc.tag() == "vae_encoder-b1-8-8-256x256-512x512-fp16"
    assert unet.tag() == "unet_t64-b1-8-8-64x64-fp16"
    # a larger tile widens the VAE tile with it
    big = profiles_for(small, 256, max_batch=2, precision="fp32")
    assert big[0].tile == (256, 256) and big[1].tile == (1024, 1024)
    assert all(p.precision == "fp32" and p.batch == (1, 2, 2) for p in big)
    with pytest.raises(BackendUnavailable, match="--tile 0"):
        profiles_for(small, 0)
    with pytest.raises(ValueError):
        EngineProfile("vae_decoder", (1, 2, 2), (64, 64), "fp16", (128, 128))


def test_batch_limit_comes_from_the_service_settings(small):
    from model.restorer import TileOptions
    from service.settings import Settings

    assert default_max_batch() == Settings.model_fields["max_batch"].default == 8
    assert TileOptions().max_batch == 4          # per-request tiling: not the engine's limit
    assert {p.batch for p in profiles_for(small, 64)} == {(1, 8, 8)}
    assert {p.batch for p in profiles_for(small, 64, max_batch=16)} == {(1, 16, 16)}


def test_profile_input_shapes():
    unet = unet_profile(64, 64, 8)
    assert unet.input_shapes("x", (-1, 3, 64, 64)) == (
        (1, 3, 64, 64), (8, 3, 64, 64), (8, 3, 64, 64))
    assert unet.input_shapes("t", (-1,)) == ((1,), (8,), (8,))
    enc = EngineProfile("vae_encoder", (1, 4, 4), (512, 512), "fp16", (256, 256))
    assert enc.input_shapes("image", (-1, 3, -1, -1)) == (
        (1, 3, 256, 256), (4, 3, 512, 512), (4, 3, 512, 512))
    with pytest.raises(ExportError, match="dynamic axis 1"):
        unet.input_shapes("x", (-1, -1, 64, 64))
    assert unet_profile(32, 64, 2).graph == "unet_t32x64"


# -- keys --------------------------------------------------------------------------------
DEVICE = TensorRTDevice("8.6", "1.7.1.116", "RTX 3090", "tensorrt_rtx")
PROFILE = EngineProfile("vae_decoder", (1, 8, 8), (128, 128), "fp16", (64, 64))


def test_engine_key_changes_with_graph_recipe_version_and_target():
    key = engine_key("a" * 64, DEVICE, PROFILE, "g" * 64, BuildRecipe())
    assert key == engine_key("a" * 64, replace(DEVICE), replace(PROFILE), "g" * 64,
                             BuildRecipe(True, None))
    changed = [engine_key("a" * 64, DEVICE, PROFILE, "h" * 64),                 # graph file
               engine_key("a" * 64, DEVICE, PROFILE, "g" * 64, BuildRecipe(True, 0)),
               engine_key("a" * 64, DEVICE, PROFILE, "g" * 64, BuildRecipe(tf32=True)),
               engine_key("a" * 64, DEVICE, PROFILE, "g" * 64, BuildRecipe(False)),
               engine_key("a" * 64, replace(DEVICE, tensorrt_version="1.8.0"), PROFILE,
                          "g" * 64),
               engine_key("a" * 64, replace(DEVICE, compute_capability="8.9"), PROFILE,
                          "g" * 64),
               engine_key("a" * 64, replace(DEVICE, module="tensorrt"), PROFILE, "g" * 64),
               engine_key("a" * 64, DEVICE, replace(PROFILE, min_tile=(32, 32)), "g" * 64),
               engine_key("a" * 64, DEVICE, replace(PROFILE, precision="fp32"), "g" * 64),
               engine_key("b" * 64, DEVICE, PROFILE, "g" * 64)]
    assert len({key, *changed}) == len(changed) + 1
    assert engine_key("a" * 64, replace(DEVICE, gpu_name="RTX 3080"), PROFILE,
                      "g" * 64) == key
    path = engine_path("/x", "a" * 64, DEVICE, PROFILE, "g" * 64)
    assert path.name == (f"vae_decoder-b1-8-8-64x64-128x128-fp16-sm86-rtx1.7.1.116-"
                         f"{key[:16]}.plan")
    assert timing_cache_path("/x", DEVICE).name == "timing-tensorrt_rtx1.7.1.116-sm86.cache"


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "e.plan"
    _write_atomic(target, b"old")
    with pytest.raises(TypeError):
        _write_atomic(target, object())          # fails half way: no bytes to write
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["e.plan"]
    _write_atomic(target, memoryview(b"new"))
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["e.plan"]


# -- module resolution -------------------------------------------------------------------
def test_module_resolution_order_and_override(monkeypatch):
    import json
    mod, tried = _import(("resshift_no_such_module", "json"))
    assert mod is json and tried == ["resshift_no_such_module is not installed"]
    monkeypatch.setenv(MODULE_ENV, "tensorrt_nightly")
    with pytest.raises(BackendUnavailable, match="unknown TensorRT module"):
        resolve_tensorrt_module()
    monkeypatch.delenv(MODULE_ENV)
    have = [m for m in ("tensorrt", "tensorrt_rtx") if _import((m,))[0] is not None]
    if not have:
        with pytest.raises(BackendUnavailable, match="pip install"):
            resolve_tensorrt_module()
        return
    assert resolve_tensorrt_module().__name__ == have[0]       # tensorrt first
    monkeypatch.setenv(MODULE_ENV, have[-1])
    assert resolve_tensorrt_module().__name__ == have[-1]
    assert resolve_tensorrt_module(have[0]).__name__ == have[0]  # the argument wins


@pytest.mark.skipif(HAS_CUDA, reason="checks the messages of a machine without a GPU")
def test_without_a_gpu_the_reason_names_it(small):
    from export.families import create_backend

    why = unavailable_reason()
    assert why is not None and "a CUDA GPU (torch sees none)" in why and "pip install" in why
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        create_backend("tensorrt", small)


@needs_rtx
def test_rtx_probe_targets_without_a_gpu(monkeypatch):
    monkeypatch.setenv(MODULE_ENV, "tensorrt_rtx")
    device = probe_tensorrt(TARGET)
    assert (device.module, device.compute_capability) == ("tensorrt_rtx", TARGET)
    assert device.tensorrt_version == tensorrt_rtx.__version__
    with pytest.raises(BackendUnavailable, match="not 7.0"):
        probe_tensorrt("7.0")                   # Volta: not an RTX target
    if not HAS_CUDA:
        with pytest.raises(BackendUnavailable, match="compute_capability"):
            probe_tensorrt()                    # no GPU and no target given


# -- the runtime's binding helpers -------------------------------------------------------
def test_runtime_dtype_and_shape_helpers():
    assert torch_dtype("HALF") is torch.float16 and torch_dtype("INT64") is torch.int64
    if tensorrt_rtx is not None:
        dt = tensorrt_rtx.DataType
        assert [torch_dtype(d) for d in (dt.FLOAT, dt.HALF, dt.BF16, dt.INT32, dt.BOOL)] == [
            torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.bool]
        with pytest.raises(ExportError, match="FP8"):
            torch_dtype(dt.FP8)
    assert batch_chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_chunks(3, 8) == [slice(0, 3)]
    check_shape("z", (16, 3, 64, 96), (1, 3, 64, 64), (8, 3, 128, 128))  # batch is chunked
    with pytest.raises(ShapeOutsideProfile):
        check_shape("z", (1, 3, 32, 64), (1, 3, 64, 64), (8, 3, 128, 128))
    with pytest.raises(ShapeOutsideProfile):
        check_shape("z", (1, 4, 64, 64), (1, 3, 64, 64), (8, 3, 128, 128))
    assert output_shape("x0", (2, 3, 64, 64)) == (2, 3, 64, 64)
    with pytest.raises(ExportError, match="data-dependent"):
        output_shape("x0", (-1, 3, 64, 64))


# -- TensorRT-RTX: parse and build on this CPU -------------------------------------------
@needs_rtx
def test_rtx_parses_fp16_graphs_with_the_intended_layer_precisions(small, small_dir):
    """Strongly typed, the fp16 graph decides each layer's type: convolutions and matrix
    products in half, normalization and softmax in float."""
    from export.store import OnnxStore
    from export.tensorrt import ParsedNetwork, onnx_graph

    store = OnnxStore(small, small_dir)
    seen = {}
    for profile in profiles_for(small, 64, max_batch=2, precision="fp16"):
        parsed = ParsedNetwork(onnx_graph(store, profile), tensorrt_rtx)
        net = parsed.network
        every = parsed.layer_precisions()        # {layer type: {output dtype: count}}
        counts = {k: every.get(k, {}) for k in
                  ("CONVOLUTION", "MATRIX_MULTIPLY", "NORMALIZATION", "SOFTMAX")}
        seen[profile.graph] = counts
        assert counts["CONVOLUTION"] and set(counts["CONVOLUTION"]) == {"HALF"}, counts
        # matrix products in half, but the codebook distances of the decoder's lookup
        float_mm = [net.get_layer(i).name for i in range(net.num_layers)
                    if net.get_layer(i).type.name == "MATRIX_MULTIPLY"
                    and net.get_layer(i).get_output(0).dtype.name == "FLOAT"]
        assert all(name.startswith("/quantize/") for name in float_mm), float_mm
        assert len(float_mm) == (profile.graph == "vae_decoder"), float_mm
        assert counts["MATRIX_MULTIPLY"].get("HALF"), counts
        assert counts["NORMALIZATION"] and set(counts["NORMALIZATION"]) == {"FLOAT"}, counts
        assert set(counts["SOFTMAX"]) <= {"FLOAT"}, counts
        # float32 at the graph's edges: what the runtime binds
        for name, _ in parsed.inputs():
            t = next(net.get_input(i) for i in range(net.num_inputs)
                     if net.get_input(i).name == name)
            assert t.dtype.name in ("FLOAT", "INT64"), (name, t.dtype)
        assert all(net.get_output(i).dtype.name == "FLOAT" for i in range(net.num_outputs))
    assert all(seen[g]["SOFTMAX"] for g in seen)                 # attention is in each
    logging.getLogger(__name__).info("layer precisions: %s", seen)


@needs_rtx
def test_rtx_builds_the_engines_once_and_finds_them_after(small, small_dir, monkeypatch):
    from export.tensorrt import EngineBuilder

    monkeypatch.setenv(MODULE_ENV, "tensorrt_rtx")
    lines: list[str] = []
    start = time.perf_counter()
    paths = build_engines(small, small_dir, tile=64, max_batch=2, precision="fp16",
                          compute_capability=TARGET, optimization_level=0,
                          progress=lines.append)
    took = time.perf_counter() - start
    assert [p.name.split("-")[0] for p in paths] == ["unet_t64", "vae_encoder", "vae_decoder"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert all("-sm86-rtx" in p.name and "-fp16-" in p.name for p in paths)
    folder = paths[0].parent
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    # TensorRT-RTX has no timing cache (its cache calls are no-ops): none is written
    assert not [n for n in os.listdir(folder) if n.endswith(".cache")]
    assert sum("built in" in line for line in lines) == 3, lines
    stamps = [p.stat().st_mtime_ns for p in paths]
    lines.clear()
    again = build_engines(small, small_dir, tile=64, max_batch=2, precision="fp16",
                          compute_capability=TARGET, optimization_level=0,
                          progress=lines.append)
    assert again == paths and [p.stat().st_mtime_ns for p in paths] == stamps
    assert sum(": found " in line for line in lines) == 3, lines
    # another target or recipe is another engine file, never one of these
    profiles = profiles_for(small, 64, max_batch=2, precision="fp16")
    for target, level in (("8.9", 0), (TARGET, 3)):
        other = EngineBuilder(small, small_dir, compute_capability=target,
                              optimization_level=level)
        assert {other.path_for(p) for p in profiles}.isdisjoint(paths)
    same = EngineBuilder(small, small_dir, compute_capability=TARGET, optimization_level=0)
    assert [same.path_for(p) for p in profiles] == paths
    logging.getLogger(__name__).info("RTX build of 3 engines: %.1f s", took)


@needs_rtx
def test_cli_export_tensorrt_prints_a_line_per_engine_and_the_paths(small_dir, capsys,
                                                                      monkeypatch):
    from resshift.cli import main

    monkeypatch.setenv(MODULE_ENV, "tensorrt_rtx")
    code = main(["export", "tensorrt", str(small_dir), "--max-batch", "2",
                 "--compute-capability", TARGET])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0].endswith("unet_t64-b1-2-2-64x64-fp16, vae_encoder-b1-2-2-256x256-512x512-"
                           "fp16, vae_decoder-b1-2-2-64x64-128x128-fp16")
    # built here, or found when the build test ran first (the CLI's default recipe is
    # TensorRT's optimization level, so these are its own engines either way)
    assert sum(line.startswith("[") and ("built in" in line or ": found " in line)
               for line in out) == 3, out
    plans = [line for line in out if line.endswith(".plan") and not line.startswith("[")]
    assert len(plans) == 3 and all(str(small_dir / "tensorrt") in p for p in plans)


# -- on a GPU: engines against torch float32 ---------------------------------------------
def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


# fp32 engines (TF32 off) repeat torch float32 to rounding; fp16 engines keep norms,
# softmax and the codebook lookup in float32, which holds each network within 40 dB
FP32_PSNR, FP16_PSNR = 60.0, 40.0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engines_match_torch_fp32_on_a_gpu(precision, tmp_path):
    from export.backends import TensorRTBackend

    restorer = load_restorer(RANDOM_SMALL, "cuda")
    try:
        backend = TensorRTBackend(restorer, cache=tmp_path, max_batch=4, precision=precision,
                                  optimization_level=0)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    bound = FP32_PSNR if precision == "fp32" else FP16_PSNR
    gen = torch.Generator("cuda").manual_seed(0)
    # the UNet at batch 3 and 6 (6 > max_batch 4: run in two chunks)
    for b in (3, 6):
        x = torch.randn(b, 3, 64, 64, device="cuda", generator=gen)
        t = torch.randint(0, 4, (b,), device="cuda", generator=gen)
        lq = torch.rand(b, 3, 64, 64, device="cuda", generator=gen) * 2 - 1
        with torch.no_grad():
            want = restorer.unet_fn()(x, t, lq, None)
        got = backend.unet_fn()(x, t, lq, None)
        assert got.dtype == torch.float32 and got.device == x.device
        assert psnr(got, want, float(want.max() - want.min())) >= bound
    # the encoder at a full VAE tile and a smaller image; the decoder after it
    for side in (512, 256):
        image = torch.rand(2, 3, side, side, device="cuda", generator=gen) * 2 - 1
        with torch.no_grad():
            z_want = restorer.autoencoder.encode(image)
            img_want = restorer.autoencoder.decode(z_want)
        z = backend.encode(image)
        assert psnr(z, z_want, float(z_want.max() - z_want.min())) >= bound
        img = backend.decode(z_want)
        assert psnr(img.clamp(-1, 1), img_want.clamp(-1, 1), 2.0) >= bound - 5
    assert backend.fallbacks == 0
    assert "tensorrt (" in backend.describe() and precision in backend.describe()


@pytest.mark.gpu
def test_restore_on_tensorrt_is_close_to_torch_fp32_on_a_gpu(tmp_path):
    """The whole sampler on fp16 engines: within 30 dB of torch float32 on the same
    noise (codebook choices may flip on random weights; a regression shows as far less)."""
    from export.backends import TensorRTBackend

    restorer = load_restorer(RANDOM_SMALL, "cuda")
    try:
        backend = TensorRTBackend(restorer, cache=tmp_path, max_batch=4, optimization_level=0)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    want = restorer.restore(image, seed=1)
    got = restorer.using(backend).restore(image, seed=1)
    assert got.shape == want.shape
    assert psnr(torch.from_numpy(got), torch.from_numpy(want), 255.0) >= 30.0
