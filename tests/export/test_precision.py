"""The torch backend's bf16 CPU path: fidelity against float32, precision ``auto``, and
``resshift bench``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export import backends
from export.backends import SplitBackend, TorchBackend, resolve_precision
from export.families import create_backend
from resshift.cli import main as cli_main
from tests.helpers.images import psnr


@pytest.fixture(scope="module")
def crop(data_dir) -> np.ndarray:
    """A 48x48 centre crop of a RealSet80 photo (odd size: padding and cropping too)."""
    from PIL import Image
    path = sorted((data_dir / "realset80").iterdir())[0]
    im = np.asarray(Image.open(path).convert("RGB"))
    top, left = (im.shape[0] - 48) // 2, (im.shape[1] - 48) // 2
    return np.ascontiguousarray(im[top:top + 48, left:left + 48])


def _fidelity(restorer, image, precision: str) -> float:
    fp32 = restorer.using(TorchBackend(restorer, "fp32")).restore(image, seed=3)
    low = restorer.using(TorchBackend(restorer, precision)).restore(image, seed=3)
    assert low.shape == fp32.shape
    return psnr(low, fp32)


def test_bf16_small_reference_within_40db(small_restorer, crop):
    assert _fidelity(small_restorer, crop, "bf16") >= 40.0


def test_bf16_demo_within_40db(demo_restorer, crop):
    backend = TorchBackend(demo_restorer, "bf16")
    assert backend.bf16_unet          # pixel space: no codebook, the UNet runs in bf16
    assert _fidelity(demo_restorer, crop, "bf16") >= 40.0


def test_bf16_keeps_latent_models_upstream_of_the_codebook_fp32(small_restorer):
    backend = TorchBackend(small_restorer, "bf16")
    assert (backend.bf16_unet, backend.bf16_encoder, backend.bf16_decoder) == (False, False, True)
    z = torch.randn(1, 3, 16, 16)
    out = backend.decode(z)
    assert out.dtype == torch.float32 and out.is_contiguous() and torch.isfinite(out).all()
    assert "decoder" in backend.describe()


@pytest.mark.parametrize("flags, speedup, expected",
                         [({"fpu", "amx_bf16", "amx_tile"}, 3.0, "bf16"),
                          ({"fpu", "avx512_bf16"}, 2.0, "bf16"),
                          ({"fpu", "avx512_bf16"}, 0.62, "fp32"),   # flags, but bf16 slower
                          ({"fpu", "avx512f"}, 2.0, "fp32"), (set(), 2.0, "fp32")])
def test_precision_auto_follows_cpu_flags_and_the_measured_speed(
        monkeypatch, small_restorer, flags, speedup, expected):
    monkeypatch.setattr(backends, "cpu_flags", lambda: set(flags))
    has_bf16 = bool(flags & set(backends.BF16_CPU_FLAGS))

    def probe():
        assert has_bf16, "no bf16 flags: nothing to measure"
        return speedup
    monkeypatch.setattr(backends, "bf16_speedup", probe)
    precision, why = resolve_precision("auto", torch.device("cpu"))
    assert precision == expected
    if has_bf16:
        assert f"{speedup:.2f}x as fast as float32" in why      # the reason names the number
    backend = create_backend("torch", small_restorer, precision="auto")
    assert isinstance(backend, TorchBackend) and backend.precision == expected


def test_the_bf16_probe_measures_this_cpu():
    from export import cpu_probe
    cpu_probe._measured.clear()
    assert 0.05 < cpu_probe.bf16_speedup() < 50      # a real ratio of two timings, both ran


def test_the_bf16_probe_runs_once_for_threads_asking_together(monkeypatch):
    import threading
    import time
    from export import cpu_probe
    calls = []

    def slow_measure():
        calls.append(1)
        time.sleep(0.2)
        return 1.5
    monkeypatch.setattr(cpu_probe, "_measure", slow_measure)
    monkeypatch.setattr(cpu_probe, "_measured", {})
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(cpu_probe.bf16_speedup()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [1.5] * 4 and len(calls) == 1


def test_precision_explicit_and_unknown(monkeypatch):
    monkeypatch.setattr(backends, "cpu_flags", lambda: set())
    assert resolve_precision("bf16", torch.device("cpu"))[0] == "bf16"
    assert resolve_precision("auto", torch.device("cuda"))[0] == "fp16"   # tensor cores
    with pytest.raises(backends.BackendUnavailable, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))


def test_onnxruntime_with_bf16_decodes_on_torch(small_restorer, tmp_path):
    pytest.importorskip("onnxruntime")
    backend = create_backend("onnxruntime", small_restorer, cache=tmp_path, precision="bf16")
    assert isinstance(backend, SplitBackend)
    assert backend.decoder.precision == "bf16" and backend.upstream.name == "onnxruntime"


def test_bench_cli_writes_json(small_model_dir, tmp_path, capsys):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.svg"
    rc = cli_main(["bench", "--model", str(small_model_dir), "--config", "torch-fp32",
                   "torch-bf16", "--batch", "1", "2", "--tile", "64", "--json", str(out),
                   "--plot", str(plot), "--threads", "1"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["precision_auto"] in ("fp32", "bf16")
    assert result["bf16_speedup"] > 0
    rows = result["rows"]
    assert [(r["config"], r["batch"]) for r in rows] == [
        ("torch-fp32", 1), ("torch-fp32", 2), ("torch-bf16", 1), ("torch-bf16", 2)]
    for row in rows:
        for key in ("encode_s", "unet_step_s", "decode_s", "total_s", "images_per_s",
                    "unet_only_s", "unet_tiles_per_s"):
            assert row[key] > 0
        assert (row["lq"], row["out"], row["tile"]) == (64, 256, 64)
    captured = capsys.readouterr()
    assert "| torch-bf16 | 2 | 64 -> 256 |" in captured.out
    assert "torch-fp32: batch 1, tile 64" in captured.err
    assert plot.read_text().startswith("<svg") and "torch-bf16 t64" in plot.read_text()


def test_bench_cli_rejects_unknown_config(small_model_dir):
    assert cli_main(["bench", "--model", str(small_model_dir), "--config", "nope"]) == 2
