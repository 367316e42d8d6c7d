"""onnxruntime sessions over torch tensors: provider options per device, IOBinding
(what the CUDA path runs) against plain numpy feeds, the CUDA provider really running."""

from __future__ import annotations

import time

import pytest
import torch

from export.ort import CPU_EP, CUDA_EP, OrtGraph, device_index, select_providers, session_providers

pytest.importorskip("onnxruntime")


def test_providers_follow_the_device():
    both = [CUDA_EP, CPU_EP]
    assert select_providers(torch.device("cuda", 1), both) == both
    assert select_providers(torch.device("cpu"), both) == [CPU_EP]
    assert select_providers("cuda:0", [CPU_EP]) == [CPU_EP]      # no CUDA provider


def test_the_cuda_provider_gets_the_workers_gpu_and_stream():
    got = session_providers([CUDA_EP, CPU_EP], torch.device("cuda", 1), stream=1234, tf32=True)
    assert got == [(CUDA_EP, {"device_id": "1", "use_tf32": "1",
                              "has_user_compute_stream": "1", "user_compute_stream": "1234"}),
                   CPU_EP]
    # a bare "cuda" is torch's current device; the default stream (0) is not passed
    got = session_providers([CUDA_EP], "cuda", current=3)
    assert got == [(CUDA_EP, {"device_id": "3", "use_tf32": "0"})]
    assert session_providers([CPU_EP], "cpu") == [CPU_EP]
    assert device_index("cuda:2") == 2


@pytest.fixture(scope="module")
def unet_graph(demo_onnx):
    return next(p for p in demo_onnx.paths if p.name.startswith("unet"))


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = shape
    return {"x": torch.randn(shape, generator=g), "t": torch.tensor([1] * b),
            "lq": torch.randn((b, 3, h, w), generator=g)}


def test_iobinding_on_the_cpu_gives_the_plain_numbers(unet_graph):
    plain = OrtGraph(unet_graph, threads=1)
    bound = OrtGraph(unet_graph, threads=1, binding=True)
    shape = [2, *plain.input_shapes["x"][1:]]
    feeds = {k: v for k, v in _inputs(shape).items() if k in plain.input_names}
    want = plain(**feeds)[0]
    first = bound(**feeds)[0]            # onnxruntime allocates, shapes are learnt
    second = bound(**feeds)[0]           # torch allocates the outputs
    assert torch.equal(first, want) and torch.equal(second, want)
    assert bound._out_shapes and second.dtype == torch.float32


def test_numpy_feeds_stay_the_cpu_path_and_are_not_slower(unet_graph):
    plain = OrtGraph(unet_graph, threads=1)
    bound = OrtGraph(unet_graph, threads=1, binding=True)
    assert not plain.binding                  # the CPU default
    shape = [1, *plain.input_shapes["x"][1:]]
    feeds = {k: v for k, v in _inputs(shape).items() if k in plain.input_names}

    plain(**feeds), bound(**feeds)
    times: dict[str, list[float]] = {"plain": [], "bound": []}
    for _ in range(21):          # interleaved: load from other processes hits both alike
        for name, graph in (("plain", plain), ("bound", bound)):
            start = time.perf_counter()
            graph(**feeds)
            times[name].append(time.perf_counter() - start)
    t_plain, t_bound = (sorted(times[k])[10] for k in ("plain", "bound"))
    # measured on the demo UNet, one thread: best 20.5 ms (numpy) vs 27.2 ms (bound),
    # medians 31 vs 32 ms; the bound leaves room for a busy shared CPU
    assert t_plain <= 1.5 * t_bound, (t_plain, t_bound)


@pytest.mark.gpu
def test_the_cuda_provider_runs_bound_on_the_workers_gpu(unet_graph):
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (install onnxruntime-gpu)")
    cpu = OrtGraph(unet_graph, threads=1)
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    stream = torch.cuda.Stream(device)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        gpu = OrtGraph(unet_graph, providers=[CUDA_EP, CPU_EP], device=device)
        assert gpu.session.get_providers()[0] == CUDA_EP and gpu.binding
        assert gpu.stream == stream.cuda_stream
        shape = [3, *cpu.input_shapes["x"][1:]]
        feeds = {k: v for k, v in _inputs(shape).items() if k in cpu.input_names}
        on_gpu = {k: v.to(device) for k, v in feeds.items()}
        outs = [gpu(**on_gpu)[0] for _ in range(2)]       # learnt shapes, then torch's
        stream.synchronize()
    want = cpu(**feeds)[0]
    for out in outs:
        assert out.device == device
        rel = float((out.cpu() - want).norm() / want.norm())
        assert rel < 1e-3, rel          # cuDNN vs MLAS float32, TF32 off
