"""Runtime backends: onnxruntime gives torch's image (same seed, float32), backend
selection, TensorRT engine-cache keys and the builder's path up to needing a GPU."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.backends import OnnxRuntimeBackend, TorchBackend
from export.errors import BackendUnavailable
from export.families import FamilyBackends, choose_backend, create_backend, family_backends
from export.paths import ExportPaths
from export.tensorrt import (EngineProfile, TensorRTDevice, build_engines, engine_key,
                             engine_path, probe_tensorrt, profiles_for)
from model.imageio import decode_image
from resshift.cli import main
from tests.helpers.images import psnr
from tests.helpers.paths import DATA

PSNR_MIN = 45.0
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A 24x24 RealSet80 crop (synthetic if the data is absent) as a PNG file."""
    from PIL import Image

    src = DATA / "realset80" / "0003.jpg"
    if src.is_file():
        pixels = np.asarray(Image.open(src).convert("RGB"))[100:124, 100:124]
    else:
        y, x = np.mgrid[:24, :24]
        pixels = np.stack([x * 10, y * 10, (x + y) * 5], -1).astype(np.uint8)
    path = tmp_path_factory.mktemp("crop") / "crop.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


def restore_cli(crop, out, backend, capsys) -> tuple[np.ndarray, str]:
    code = main(["restore", str(crop), "-o", str(out), "--seed", "1", "-q",
                 "--backend", backend, "--precision", "fp32"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    return decode_image(out).pixels, stdout


def test_cli_onnxruntime_gives_the_torch_image(crop, cache, tmp_path, capsys, demo_restorer):
    ref, out_torch = restore_cli(crop, tmp_path / "torch.png", "torch", capsys)
    got, out_ort = restore_cli(crop, tmp_path / "ort.png", "onnxruntime", capsys)
    assert "backend: torch (cpu" in out_torch
    assert "backend: onnxruntime (CPU, float32" in out_ort
    assert ref.shape == got.shape == (96, 96, 3)
    value = psnr(got, ref)
    assert value >= PSNR_MIN, f"onnxruntime vs torch: PSNR {value:.2f} dB"
    # the bundled model is not written into: its graphs went to the cache
    weights = OnnxRuntimeBackend(demo_restorer).store.weights
    assert (cache / "onnx" / weights[:16] / "unet_t64.onnx").is_file()


def test_onnxruntime_runs_other_tile_shapes(cache, demo_restorer):
    """A 16x8 image has a 64x32 latent: a non-square UNet graph is exported for it."""
    image = (np.random.default_rng(0).random((8, 16, 3)) * 255).astype(np.uint8)
    backend = create_backend("onnxruntime", demo_restorer)
    got = demo_restorer.using(backend).restore(image, seed=3)
    ref = demo_restorer.restore(image, seed=3)
    assert psnr(got, ref) >= PSNR_MIN
    assert (backend.store.directory / "unet_t32x64.onnx").is_file()
    assert demo_restorer.backend is None            # using() leaves the original alone


def test_onnxruntime_encoder_and_decoder_of_a_latent_model(small_restorer, small_model_dir,
                                                           small_onnx):
    backend = create_backend("onnxruntime", small_restorer, model_dir=small_model_dir)
    assert backend.store.directory == small_onnx.directory        # the export is reused
    image = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    ref = small_restorer.restore(image, seed=2)
    got = small_restorer.using(backend).restore(image, seed=2)
    assert psnr(got, ref) >= PSNR_MIN
    # the spatially dynamic VAE graphs run without onnxruntime's CPU arena (it keeps a
    # large image's high-water mark for ever); the fixed-shape UNet tiles keep it
    arena = {key: graph.session.get_session_options().enable_cpu_mem_arena
             for key, graph in backend._sessions.items()}
    assert arena.pop("encoder") is False and arena.pop("decoder") is False
    assert arena and all(arena.values()), arena


def test_auto_runs_a_latent_models_autoencoder_on_torch_in_bands(small_restorer, tmp_path,
                                                                 monkeypatch):
    from export import backends
    from export.backends import SplitBackend
    from model.restorer import TileOptions, to_model_range, to_uint8
    from tests.helpers.images import photo
    monkeypatch.setattr(backends, "cpu_flags", lambda: set())          # a CPU without bf16
    backend = create_backend("auto", small_restorer, cache=tmp_path)
    assert choose_backend(small_restorer)[0] == backend.name == "split"
    assert isinstance(backend, SplitBackend) and backend.precision == "fp32"
    assert backend.upstream.inner.name == "onnxruntime"
    assert backend.prepare([(64, 64)]) == ["unet 64x64"]        # no VAE graphs opened
    # the float32 torch autoencoder, in bands: the modules' result to ~1e-6
    image = to_model_range(photo(64, 64, seed=1), "cpu")
    ae = small_restorer.autoencoder
    seen = []
    forward = ae.encoder.forward
    ae.encoder.forward = lambda x: seen.append(ae.encoder.band_elems) or forward(x)
    try:
        with torch.no_grad():
            z = backend.encode(image)
    finally:
        del ae.encoder.forward
    assert seen and seen[0] is not None and ae.encoder.band_elems is None
    with torch.no_grad():
        assert float((z - ae.encode(image)).abs().max()) < 1e-4
    out = to_uint8(small_restorer.using(backend).decode(z, TileOptions()))
    assert psnr(out, to_uint8(small_restorer.decode(z))) > 60.0
    # explicitly asked for, onnxruntime runs every graph
    assert create_backend("onnxruntime", small_restorer, cache=tmp_path).name == "onnxruntime"


def test_auto_on_this_cpu(demo_restorer, cache, caplog):
    with caplog.at_level(logging.INFO, logger="resshift.export"):
        backend = create_backend("auto", demo_restorer)
    name, why = choose_backend(demo_restorer)
    assert backend.name == name == "onnxruntime"       # measured faster than torch fp32
    assert "backend auto -> onnxruntime" in caplog.text and "CPU" in why


def test_a_family_is_served_by_what_it_registers(demo_restorer):
    """Backends are looked up by the restorer's type: a type nobody registered gets a
    clear error, and a family that registers torch only runs on torch only (DiffIR's
    registration: tests/export/test_diffir_backends.py)."""
    class Unregistered:
        device = torch.device("cpu")
        family = "unregistered"
    with pytest.raises(BackendUnavailable, match="no backends for a Unregistered"):
        create_backend("torch", Unregistered())

    class TorchOnly(type(demo_restorer)):
        pass
    family_backends.register(TorchOnly, lambda r: FamilyBackends(
        ("torch",), False, lambda r, p: ("torch", "only torch"),
        lambda name, r, *rest: TorchBackend(r, "fp32")))
    other = copy.copy(demo_restorer.using(None))
    other.__class__ = TorchOnly
    other.family = "torch-only"
    assert choose_backend(other) == ("torch", "only torch")
    assert isinstance(create_backend("auto", other), TorchBackend)
    with pytest.raises(BackendUnavailable, match="torch backend"):
        create_backend("onnxruntime", other)
    with pytest.raises(BackendUnavailable, match="run in fp32"):
        create_backend("torch", other, precision="bf16")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without a GPU")
def test_tensorrt_without_gpu_is_one_clear_line(crop, tmp_path, caplog, demo_restorer):
    with pytest.raises(BackendUnavailable, match="CUDA GPU"):
        create_backend("tensorrt", demo_restorer)
    code = main(["restore", str(crop), "-o", str(tmp_path / "x.png"), "--backend", "tensorrt"])
    assert code == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    line = errors[0].getMessage()
    assert "\n" not in line and "pip install" in line and "tensorrt" in line
    assert not (tmp_path / "x.png").exists()


DEVICE = TensorRTDevice("9.0", "10.9.0.34", "NVIDIA H100")
PROFILE = EngineProfile("unet_t64", (1, 4, 4), (64, 64), "fp16")


def test_engine_key_changes_with_everything_that_changes_an_engine():
    key = engine_key("a" * 64, DEVICE, PROFILE)
    assert key == engine_key("a" * 64, replace(DEVICE), EngineProfile(*PROFILE.__dict__.values()))
    changed = [engine_key("b" + "a" * 63, DEVICE, PROFILE),
               engine_key("a" * 64, replace(DEVICE, compute_capability="8.0"), PROFILE),
               engine_key("a" * 64, replace(DEVICE, tensorrt_version="10.8.0"), PROFILE),
               engine_key("a" * 64, DEVICE, replace(PROFILE, batch=(1, 8, 8))),
               engine_key("a" * 64, DEVICE, replace(PROFILE, tile=(128, 128))),
               engine_key("a" * 64, DEVICE, replace(PROFILE, precision="fp32")),
               engine_key("a" * 64, DEVICE, replace(PROFILE, graph="vae_decoder"))]
    assert len({key, *changed}) == len(changed) + 1
    # the GPU's name alone does not: cards of one compute capability share engines
    assert engine_key("a" * 64, replace(DEVICE, gpu_name="H200"), PROFILE) == key
    name = engine_path(tmp := ExportPaths.cached("a" * 64).tensorrt, "a" * 64, DEVICE,
                       PROFILE)
    assert name.parent == tmp
    assert name.name == f"unet_t64-b1-4-4-64x64-fp16-sm90-trt10.9.0.34-{key[:16]}.plan"
    with pytest.raises(ValueError):
        EngineProfile("unet_t64", (4, 1, 8), (64, 64))
    with pytest.raises(ValueError):
        EngineProfile("unet_t64", (1, 1, 8), (64, 64), "int8")


def test_profiles_follow_the_tile_options(demo_restorer, small_restorer):
    assert profiles_for(demo_restorer, 64, max_batch=4) == [PROFILE]
    assert profiles_for(demo_restorer, 64)[0].batch == (1, 8, 8)   # the service's max_batch
    small = profiles_for(small_restorer, 64, max_batch=8, precision="fp32")
    assert [(p.graph, p.batch, p.spatial) for p in small] == [
        ("unet_t64", (1, 8, 8), ((64, 64), (64, 64))),
        ("vae_encoder", (1, 8, 8), ((256, 256), (512, 512))),
        ("vae_decoder", (1, 8, 8), ((64, 64), (128, 128)))]
    with pytest.raises(BackendUnavailable, match="--tile 0"):
        profiles_for(demo_restorer, 0)


def test_export_paths(tmp_path, small_model_dir):
    assert ExportPaths.resolve("demo", "f" * 64, tmp_path) == ExportPaths(
        tmp_path / "onnx" / ("f" * 16), tmp_path / "tensorrt" / ("f" * 16), False)
    beside = ExportPaths.resolve(small_model_dir, "f" * 64, tmp_path)
    assert beside.onnx == small_model_dir / "onnx" and beside.in_model_dir
    assert not ExportPaths.resolve(None, "f" * 64, tmp_path).in_model_dir


def test_tensorrt_builder_runs_up_to_the_gpu(demo_restorer, cache):
    """Profiles and checked ONNX graphs come first; then the GPU / TensorRT step raises."""
    with pytest.raises(BackendUnavailable) as info:
        build_engines(demo_restorer, "demo", tile=64)
    weights = OnnxRuntimeBackend(demo_restorer).store.weights
    assert (cache / "onnx" / weights[:16] / "unet_t64.onnx").is_file()
    if not HAS_CUDA:
        assert "a CUDA GPU" in str(info.value) and "pip install" in str(info.value)


@pytest.mark.gpu
def test_tensorrt_probe_on_a_gpu():
    pytest.importorskip("tensorrt")
    device = probe_tensorrt()
    major, minor = torch.cuda.get_device_capability()
    assert device.compute_capability == f"{major}.{minor}" and device.tensorrt_version


def test_a_reduced_precision_decode_with_nan_is_redone_in_float32(small_restorer):
    """Fault injection: the real decoder, made to overflow only under autocast (as fp16
    VAE decoders do); the bf16 backend must notice, decode in float32 and count it."""
    from export.backends import decode_failure
    ae = small_restorer.autoencoder
    z = ae.encode(torch.rand(1, 3, 32, 32) * 2 - 1)
    want = ae.decode(z)
    backend = TorchBackend(small_restorer, "bf16")
    seen = []
    backend.on_fallback = seen.append

    def overflow_under_autocast(_module, _inputs, output):
        if torch.is_autocast_enabled("cpu"):
            output = output.clone()
            output[0, 0, 0, 0] = float("inf")
            return output
    handle = ae.decoder.register_forward_hook(overflow_under_autocast)
    try:
        got = backend.decode(z)
    finally:
        handle.remove()
    assert backend.fallbacks == 1 and seen and "NaN/Inf" in seen[0]
    assert torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-5)
    # a healthy bf16 decode is kept as it is (no redo), and dark images are not failures
    assert backend.decode(z).shape == want.shape and backend.fallbacks == 1
    assert decode_failure(torch.full((1, 3, 8, 8), -1.0)) is None


def test_tiled_vae_passes_run_at_the_torch_backends_precision(small_restorer):
    """A torch autocast backend runs the restorer's own autoencoder, so tiled encode and
    decode passes (GroupNorm hooks on those modules) use it too instead of falling back
    to float32; a backend over other module objects is not used for tiles."""
    import copy

    from model.restorer import TileOptions, to_model_range, to_uint8
    from tests.helpers.images import photo
    tiles = TileOptions(vae_tile=128, vae_overlap=32, vae_budget=0)    # tiles, not bands
    lq = to_model_range(photo(96, 96, seed=3), "cpu")
    z = small_restorer.encode_lq(lq)
    fp32 = to_uint8(small_restorer.decode(z, tiles))

    bf16 = TorchBackend(small_restorer, "bf16")
    calls = []
    real = bf16.decode
    bf16.decode = lambda x, quantize=True: calls.append(tuple(x.shape)) or real(x, quantize)
    tiled = to_uint8(small_restorer.using(bf16).decode(z, tiles))
    # 384x384 output in 128-pixel tiles: 16 tiles, each run twice (statistics, then use
    # in batches)
    assert sum(s[0] for s in calls) == 2 * 16 and all(s[-1] <= 32 for s in calls)
    assert not np.array_equal(tiled, fp32)            # bf16 really ran
    assert psnr(tiled, fp32) > 35.0

    other = TorchBackend(copy.deepcopy(small_restorer), "bf16")
    np.testing.assert_array_equal(to_uint8(small_restorer.using(other).decode(z, tiles)), fp32)

    # within the memory budget the same image runs whole in row bands: one call, bf16
    bands = TileOptions(vae_tile=128, vae_attn_window=96)
    calls.clear()
    banded = to_uint8(small_restorer.using(bf16).decode(z, bands))
    whole = to_uint8(small_restorer.decode(z))
    assert calls == [tuple(z.shape)]
    assert not np.array_equal(banded, whole) and psnr(banded, whole) > 35.0
