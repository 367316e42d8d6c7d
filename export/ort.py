"""Running exported graphs with onnxruntime on torch tensors (CPU or CUDA).

:class:`OrtGraph` is one inference session that takes and returns torch tensors;
:class:`OnnxUNet` runs a UNet graph as the network callable
``f(x_scaled, t, lq, mask) -> output`` (``model.denoiser``), which the restorer wraps
into the one sampler's denoiser.

On CUDA the tensors never leave the GPU: inputs are bound by their device pointers
(IOBinding), outputs are allocated by torch on the worker's device and bound the same
way, and the session runs on the torch stream that was current when it was opened.
On the CPU numpy feeds are used (as fast as binding there, measured; see ``OrtGraph``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import BackendUnavailable, ExportError

CPU = ("CPUExecutionProvider",)
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
ORT_INSTALL = ("pip install 'resshift-service[onnx]' (CPU) or 'resshift-service[gpu]' "
               "(onnxruntime-gpu)")

# ONNX tensor element types (session.get_inputs()[i].type) -> torch dtypes
_TORCH_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
                "tensor(int64)": torch.int64, "tensor(int32)": torch.int32,
                "tensor(bool)": torch.bool, "tensor(double)": torch.float64,
                "tensor(bfloat16)": torch.bfloat16}
_NUMPY_TYPES = {torch.float32: np.float32, torch.float16: np.float16,
                torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_,
                torch.float64: np.float64}


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference); inf if they differ in shape."""
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
    if a.shape != b.shape:
        return float("inf")
    denom = float(b.norm())
    diff = float((a - b).norm())
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


def select_providers(device: torch.device | str, available: list[str]) -> list[str]:
    """CUDA then CPU when ``available`` (onnxruntime's providers) has the CUDA provider
    and ``device`` is a GPU; CPU otherwise. The CPU provider stays second on CUDA for
    the few ops the CUDA provider lacks (shape arithmetic). Which GPU is the session's
    ``device_id``: ``export.ort.session_providers``."""
    cuda = CUDA_EP in available and torch.device(device).type == "cuda"
    return [CUDA_EP, CPU_EP] if cuda else [CPU_EP]


def ort_providers(device: torch.device) -> list[str]:
    """:func:`select_providers` with onnxruntime's available providers.
    BackendUnavailable without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable(f"the onnxruntime backend needs onnxruntime and onnx; "
                                 f"install with {ORT_INSTALL}")
    import onnxruntime

    return select_providers(device, onnxruntime.get_available_providers())


def device_index(device: torch.device | str, current: int = 0) -> int:
    """The GPU ordinal of ``device``; ``current`` for a bare "cuda" (torch's current
    device, which the caller knows; this function stays free of CUDA calls)."""
    device = torch.device(device)
    return int(device.index) if device.index is not None else int(current)


def session_providers(providers: Sequence[str], device: torch.device | str, *,
                      stream: int = 0, tf32: bool = False, current: int = 0
                      ) -> list[str | tuple[str, dict[str, str]]]:
    """onnxruntime's ``providers`` argument for a session serving ``device``.

    The CUDA provider gets ``device_id`` from the device (without it every session
    lands on GPU 0 whatever the worker's device), ``use_tf32`` as the service's TF32
    setting says (onnxruntime's own default is on), and ``user_compute_stream`` when
    ``stream`` is a non-default torch stream pointer, so onnxruntime and torch queue
    work in one order. Pointer 0 (torch's default stream) is not passed: onnxruntime
    treats it as "no stream" anyway.
    """
    out: list[str | tuple[str, dict[str, str]]] = []
    for name in providers:
        if name != CUDA_EP:
            out.append(name)
            continue
        opts = {"device_id": str(device_index(device, current)),
                "use_tf32": "1" if tf32 else "0"}
        if stream:
            opts["has_user_compute_stream"] = "1"
            opts["user_compute_stream"] = str(int(stream))
        out.append((name, opts))
    return out


class OrtGraph:
    """An onnxruntime session over torch tensors.

    threads: intra-op threads (default: torch's current setting, so one knob governs
    both runtimes in a process). providers: onnxruntime execution provider names.
    device: where inputs and outputs live (the restorer's device). tf32: the CUDA
    provider's TF32 switch. binding: run through IOBinding (always on CUDA; on the CPU
    only when asked: numpy feeds were measured as fast there, see the tests).

    With the CUDA provider asked for, the session must really run on it: onnxruntime
    silently falls back to the CPU when its CUDA libraries do not load, which here is
    an error (``BackendUnavailable``) rather than a 50x slower service.
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None,
                 providers: Sequence[str] = CPU, device: torch.device | str = "cpu",
                 tf32: bool = False, binding: Optional[bool] = None, arena: bool = True):
        import onnxruntime as ort

        self.path = Path(path)
        self.device = torch.device(device)
        cuda = CUDA_EP in providers
        if cuda and self.device.type != "cuda":
            raise BackendUnavailable(f"the CUDA provider needs a CUDA device, not {self.device}")
        stream, current = 0, 0
        if cuda:
            current = torch.cuda.current_device()
            self.device = torch.device("cuda", device_index(self.device, current))
            stream = int(torch.cuda.current_stream(self.device).cuda_stream)
        self.stream = stream
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # The CPU arena keeps its high-water mark for the life of the session and the
        # memory pattern is planned per input shape: right for fixed-shape graphs (the
        # UNet tiles), wrong for spatially dynamic ones. Measured on the full-size
        # realsr_v3 encoder, one 512x512 input: peak RSS 6.4 GB with both, 3.4 GB without.
        opts.enable_cpu_mem_arena = bool(arena)
        opts.enable_mem_pattern = bool(arena)
        self.session = ort.InferenceSession(
            str(path), opts, providers=session_providers(providers, self.device, stream=stream,
                                                         tf32=tf32, current=current))
        running = self.session.get_providers()
        if cuda and CUDA_EP not in running:
            raise BackendUnavailable(
                f"onnxruntime did not start its CUDA provider for {self.path.name} on "
                f"{self.device} (running: {', '.join(running)}); check that onnxruntime-gpu "
                f"matches the CUDA and cuDNN libraries (pip install 'resshift-service[gpu]')")
        self.providers = running
        self.binding = cuda if binding is None else bool(binding)
        if cuda and not self.binding:
            raise BackendUnavailable("the CUDA provider runs through IOBinding only")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.input_types = {i.name: _TORCH_TYPES.get(i.type, torch.float32)
                            for i in self.session.get_inputs()}
        self.output_types = [_TORCH_TYPES.get(o.type, torch.float32)
                             for o in self.session.get_outputs()]
        # output shapes per input shapes, learnt on the first run of each (graphs with
        # dynamic axes cannot say them beforehand)
        self._out_shapes: dict[tuple, list[tuple[int, ...]]] = {}

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ExportError(f"{self.path.name} needs inputs {', '.join(missing)}")
        if self.binding:
            return self._run_bound(inputs)
        feeds = {n: inputs[n].detach().to("cpu", self.input_types[n]).contiguous().numpy()
                 for n in self.input_names}
        return [torch.from_numpy(o) for o in self.session.run(None, feeds)]

    def _run_bound(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One run through IOBinding: torch memory in and out, no host round trip."""
        kind, index = self.device.type, (self.device.index or 0)
        # Kept referenced until the run returns: onnxruntime reads them by pointer.
        held = {n: inputs[n].detach().to(self.device, self.input_types[n]).contiguous()
                for n in self.input_names}
        io = self.session.io_binding()
        for n, t in held.items():
            io.bind_input(n, kind, index, _NUMPY_TYPES[t.dtype], tuple(t.shape), t.data_ptr())
        key = tuple(tuple(t.shape) for t in held.values())
        shapes = self._out_shapes.get(key)
        outputs: list[torch.Tensor] = []
        if shapes is None:
            # First run of these shapes: onnxruntime allocates (on the device) and says
            # the shapes; later runs write into tensors torch allocated.
            for n in self.output_names:
                io.bind_output(n, kind, index)
        else:
            for n, shape, dtype in zip(self.output_names, shapes, self.output_types):
                out = torch.empty(shape, dtype=dtype, device=self.device)
                io.bind_output(n, kind, index, _NUMPY_TYPES[dtype], shape, out.data_ptr())
                outputs.append(out)
        if kind == "cuda" and self.stream != int(torch.cuda.current_stream(self.device)
                                                  .cuda_stream):
            # Called from another stream than the session's: the inputs torch queued
            # there must be written before onnxruntime's stream reads them.
            torch.cuda.current_stream(self.device).synchronize()
        # run_with_iobinding returns after onnxruntime synchronized its stream, so the
        # outputs are complete for any torch stream that reads them next.
        self.session.run_with_iobinding(io)
        if shapes is None:
            values = io.get_outputs()
            self._out_shapes[key] = [tuple(v.shape()) for v in values]
            outputs = [torch.from_numpy(v.numpy()).to(self.device) for v in values]
        return outputs


class OnnxUNet:
    """A UNet graph as the network callable ``f(x_scaled, t, lq, mask) -> output``
    (``model.denoiser.Network``; ``X0Denoiser`` makes it a denoiser). Inputs must have
    the graph's tile size."""

    def __init__(self, graph: OrtGraph):
        self.graph = graph
        self.tile = graph.input_shapes["x"][2:]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, lq: Optional[torch.Tensor],
                 mask: Optional[torch.Tensor]) -> torch.Tensor:
        if list(x.shape[2:]) != self.tile:
            raise ExportError(f"{self.graph.path.name} runs {self.tile[0]}x{self.tile[1]} tiles, "
                              f"got {x.shape[2]}x{x.shape[3]}; export that tile size too")
        if lq is None:
            raise ExportError(f"{self.graph.path.name} needs the lq conditioning")
        inputs = {"x": x.float(), "t": t.long(), "lq": lq.float()}
        if "mask" in self.graph.input_names:
            if mask is None:
                raise ExportError(f"{self.graph.path.name} needs a mask")
            inputs["mask"] = mask.float()
        return self.graph(**inputs)[0].to(x.device, x.dtype)
