"""Running TensorRT engines on torch CUDA tensors, on the caller's device and stream.

    engine = TRTEngine(path, torch.device("cuda:1"))
    (x0,) = engine(x=x, t=t, lq=lq)          # CUDA tensors in, CUDA tensors out

An engine is deserialized under its device (``torch.cuda.device``) and gets one
execution context; a worker builds its own :class:`TRTEngine` objects, so contexts are
never shared between threads. Inputs are bound by name as contiguous torch tensors of
the engine's dtype (``set_input_shape`` / ``set_tensor_address``), outputs are torch
tensors allocated with the shape the context infers, and ``execute_async_v3`` is
enqueued on torch's current stream of that device: the work is ordered with the
surrounding torch work and nothing is copied to the host. Tensors freed after the call
go back to torch's caching allocator on that same stream, which orders their reuse
after the engine's kernels.

Batches larger than the engine's profile run in chunks of its largest batch. The pure
helpers (:func:`torch_dtype`, :func:`batch_chunks`, :func:`check_shape`) are what the
CPU tests cover; the rest needs a GPU.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional, Sequence

import torch

from .errors import ExportError
from .tensorrt import resolve_tensorrt_module, trt_logger


# TensorRT DataType member name -> torch dtype (the same names in tensorrt and
# tensorrt_rtx; types without a torch twin, FP8 / FP4 / INT4, never reach an I/O tensor
# of these graphs)
TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16,
                "INT32": torch.int32, "INT64": torch.int64, "INT8": torch.int8,
                "UINT8": torch.uint8, "BOOL": torch.bool}


class ShapeOutsideProfile(ExportError):
    """An input shape the engine's optimization profile does not cover."""


def torch_dtype(trt_dtype) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (member or its name)."""
    name = trt_dtype if isinstance(trt_dtype, str) else getattr(trt_dtype, "name", None)
    name = name or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TORCH_DTYPES:
        raise ExportError(f"TensorRT tensor type {name} has no torch dtype")
    return TORCH_DTYPES[name]


def dims_tuple(dims) -> tuple[int, ...]:
    """A TensorRT ``Dims`` (or any sequence of ints) as a tuple."""
    return tuple(int(d) for d in dims)


def check_shape(name: str, shape: Sequence[int], lo: Sequence[int], hi: Sequence[int]) -> None:
    """ShapeOutsideProfile unless lo <= shape <= hi in every axis (batch excluded: larger
    batches are chunked)."""
    shape, lo, hi = tuple(shape), tuple(lo), tuple(hi)
    if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in
                                    zip(shape[1:], lo[1:], hi[1:])):
        raise ShapeOutsideProfile(f"input {name} {list(shape)} is outside the engine's "
                                  f"profile {list(lo)} .. {list(hi)}")


def batch_chunks(batch: int, max_batch: int) -> list[slice]:
    """Slices of at most ``max_batch`` along a batch of ``batch``."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return [slice(i, min(i + max_batch, batch)) for i in range(0, batch, max_batch)]


def output_shape(name: str, dims) -> tuple[int, ...]:
    """An output's shape as the context infers it; -1 (data-dependent) is not supported:
    every output of these graphs follows from the input shapes."""
    shape = dims_tuple(dims)
    if any(d < 0 for d in shape):
        raise ExportError(f"output {name} has a data-dependent shape {list(shape)}")
    return shape


class TRTEngine:
    """One engine and its execution context on ``device`` (a CUDA torch device)."""

    def __init__(self, path: str | Path, device: torch.device | str, module=None):
        self.path = Path(path)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ExportError(f"TensorRT engines run on CUDA devices, not {self.device}")
        trt = module if module is not None else resolve_tensorrt_module()
        self.module = trt
        self.logger = trt_logger(trt)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ExportError(f"{trt.__name__} cannot load {self.path.name} on "
                                  f"{torch.cuda.get_device_name(self.device)} (built for "
                                  f"another GPU or TensorRT version?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = {n: tuple(dims_tuple(d) for d in
                                 self.engine.get_tensor_profile_shape(n, 0))
                        for n in self.inputs}
        self.max_batch = min(p[2][0] for p in self.profile.values())
        # an execution context is not re-entrant: one call at a time
        self._lock = threading.Lock()

    def fits(self, **shapes: Sequence[int]) -> bool:
        """Whether inputs of these shapes (batch aside) are within the profile."""
        try:
            for name, shape in shapes.items():
                lo, _, hi = self.profile[name]
                check_shape(name, shape, lo, hi)
        except ShapeOutsideProfile:
            return False
        return True

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ExportError(f"{self.path.name} needs inputs {', '.join(missing)}")
        batch = int(inputs[self.inputs[0]].shape[0])
        parts = [self._run({n: inputs[n][s] for n in self.inputs})
                 for s in batch_chunks(batch, self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return [torch.cat([p[i] for p in parts]) for i in range(len(self.outputs))]

    def _run(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        bound = {}
        for name in self.inputs:
            lo, _, hi = self.profile[name]
            check_shape(name, inputs[name].shape, lo, hi)
            bound[name] = inputs[name].to(self.device, self.dtypes[name]).contiguous()
        with self._lock, torch.cuda.device(self.device):
            ctx = self.context
            for name, tensor in bound.items():
                if not ctx.set_input_shape(name, tuple(tensor.shape)):
                    raise ShapeOutsideProfile(f"{self.path.name} refused input {name} "
                                              f"{list(tensor.shape)}")
                ctx.set_tensor_address(name, tensor.data_ptr())
            outs = []
            for name in self.outputs:
                out = torch.empty(output_shape(name, ctx.get_tensor_shape(name)),
                                  dtype=self.dtypes[name], device=self.device)
                ctx.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            stream = torch.cuda.current_stream(self.device)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise ExportError(f"{self.module.__name__} failed to enqueue {self.path.name}")
        return outs

    def describe(self) -> str:
        shapes = ", ".join(f"{n} {list(p[0])}..{list(p[2])}" for n, p in self.profile.items())
        return f"{self.path.name} ({shapes})"


def open_engine(path: str | Path, device: torch.device | str,
                module_name: Optional[str] = None) -> TRTEngine:
    """:class:`TRTEngine` of ``path`` with the TensorRT module that built it."""
    return TRTEngine(path, device, resolve_tensorrt_module(module_name))
