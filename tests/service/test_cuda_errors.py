"""Sticky CUDA errors: which ones poison a device, and what the service does then.

The messages are the ones torch, onnxruntime, TensorRT and cuBLAS really print (copied
from their error paths: torch's ``c10::cuda`` checks, onnxruntime's ``CUDA_CALL``
macro, TensorRT's logger). The service flow is tested on the CPU by a forward hook on
the served UNet that raises what torch raises after an illegal memory access; the real
error, raised by a real kernel, is tested on a GPU in a child process (a sticky error
would break every later CUDA test of this process).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from service.cuda_errors import is_poisoning_cuda_error, poisoning_reason

from tests.helpers.images import encode, photo
from tests.helpers.paths import REPO
from tests.helpers.service import form, metric, running_app, settings_for

TORCH_HINT = ("\nCUDA kernel errors might be asynchronously reported at some other API "
              "call, so the stacktrace below might be incorrect.\nFor debugging consider "
              "passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable "
              "device-side assertions.\n")

STICKY = [
    RuntimeError("CUDA error: an illegal memory access was encountered" + TORCH_HINT),
    RuntimeError("CUDA error: device-side assert triggered" + TORCH_HINT),
    RuntimeError("CUDA error: unspecified launch failure" + TORCH_HINT),
    RuntimeError("CUDA error: misaligned address" + TORCH_HINT),
    RuntimeError("CUDA error: an illegal instruction was encountered" + TORCH_HINT),
    # onnxruntime's CUDA provider
    RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 700: an illegal memory "
                 "access was encountered ; GPU=0 ; hostname=node ; file=/onnxruntime_src/"
                 "onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=446 ; "
                 "expr=cudaStreamSynchronize(static_cast<cudaStream_t>(stream));"),
    RuntimeError("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 719: unspecified launch "
                 "failure ; GPU=1 ; hostname=node"),
    # TensorRT's logger
    RuntimeError("[TRT] [E] 1: [defaultAllocator.cpp::deallocate::42] Error Code 1: Cuda "
                 "Runtime (an illegal memory access was encountered)"),
    RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( "
                 "handle, opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc)`"),
    RuntimeError("cudaErrorLaunchFailure"),
]
RECOVERABLE = [
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total "
                 "capacity; 75.02 GiB already allocated; 1.62 GiB free)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    RuntimeError("CUDA error: no kernel image is available for execution on the device"
                 + TORCH_HINT),
    RuntimeError("Expected all tensors to be on the same device, but found at least two "
                 "devices, cuda:0 and cpu!"),
    RuntimeError("Input type (torch.cuda.HalfTensor) and weight type (torch.cuda."
                 "FloatTensor) should be the same"),
    RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for "
                 "input: x for the following indices index: 2 Got: 32 Expected: 16"),
    ValueError("an illegal value"),
]


@pytest.mark.parametrize("exc", STICKY, ids=lambda e: str(e)[:48])
def test_sticky_cuda_errors_poison(exc):
    assert is_poisoning_cuda_error(exc)
    assert "\n" not in poisoning_reason(exc)          # one line for /readyz


@pytest.mark.parametrize("exc", RECOVERABLE, ids=lambda e: str(e)[:48])
def test_recoverable_errors_do_not(exc):
    assert not is_poisoning_cuda_error(exc)


def test_the_cause_chain_is_followed():
    try:
        try:
            raise RuntimeError("CUDA error: device-side assert triggered" + TORCH_HINT)
        except RuntimeError as inner:
            raise ValueError("batch of 4 tiles failed") from inner
    except ValueError as outer:
        assert poisoning_reason(outer) == "CUDA error: device-side assert triggered"


def test_a_poisoned_worker_turns_readyz_503_and_requests_503(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]})
    with running_app(settings) as c:
        worker = c.app.state.services.scheduler.workers[0]
        good = c.post("/v1/restore", **form(encode(photo(16, 16)), seed=1))
        assert good.status_code == 200

        def sticky(_module, _inputs, _output):
            # what torch raises once a kernel of this batch read out of bounds
            raise RuntimeError("CUDA error: an illegal memory access was encountered"
                               + TORCH_HINT)
        worker._restorers["sr"].unet.register_forward_hook(sticky)
        bad = c.post("/v1/restore", **form(encode(photo(16, 16)), seed=2))
        assert bad.status_code == 503, bad.text
        assert bad.json()["error"]["code"] == "device_failed"
        ready = c.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()["error"]["message"]
        assert worker.device in detail and "illegal memory access" in detail
        # later requests are refused up front with 503, never 500
        later = c.post("/v1/restore", **form(encode(photo(16, 16)), seed=3))
        assert later.status_code == 503
        assert metric(c.get("/metrics").text, "resshift_device_poisoned",
                      device=worker.device) == 1


# -- on a GPU -----------------------------------------------------------------------------
_DEVICE_ASSERT = textwrap.dedent("""
    import torch
    from service.cuda_errors import is_poisoning_cuda_error
    x = torch.zeros(4, device="cuda")
    try:
        x[torch.tensor([10], device="cuda")] = 1.0      # out of bounds: device-side assert
        torch.cuda.synchronize()
    except Exception as exc:
        first = exc
    else:
        raise SystemExit("no error raised")
    try:                                                # the context stays broken
        torch.ones(2, device="cuda").sum().item()
    except Exception as exc:
        later = exc
    else:
        later = None
    print("FIRST", is_poisoning_cuda_error(first), repr(str(first).splitlines()[0]))
    print("LATER", later is not None and is_poisoning_cuda_error(later))
""")


@pytest.mark.gpu
def test_a_real_device_side_assert_is_classified_as_poisoning():
    # in a child process: the broken context must not take the other GPU tests with it
    out = subprocess.run([sys.executable, "-c", _DEVICE_ASSERT], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert "FIRST True" in out.stdout, out.stdout + out.stderr
    assert "LATER True" in out.stdout, out.stdout + out.stderr


_POISONED_SERVICE = textwrap.dedent("""
    import sys, torch
    from tests.helpers.images import encode, photo
    from tests.helpers.service import form, running_app, settings_for
    settings = settings_for({"sr": sys.argv[1]}, devices=["cuda:0"])
    with running_app(settings) as c:
        worker = c.app.state.services.scheduler.workers[0]
        def bad_kernel(_m, _i, out):
            out.view(-1)[torch.tensor([out.numel() * 4], device=out.device)] = 0.0
        worker._restorers["sr"].unet.register_forward_hook(bad_kernel)
        r = c.post("/v1/restore", **form(encode(photo(16, 16)), seed=2))
        ready = c.get("/readyz")
        print("STATUS", r.status_code, ready.status_code,
              "cuda:0" in ready.json()["error"]["message"])
""")


@pytest.mark.gpu
def test_a_real_sticky_error_in_a_batch_turns_readyz_503(model_dirs):
    out = subprocess.run([sys.executable, "-c", _POISONED_SERVICE, model_dirs["sr"]],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "STATUS 503 503 True" in out.stdout, out.stdout + out.stderr[-4000:]
