"""Running exported graphs with onnxruntime (CPU) on torch tensors.

:class:`OrtGraph` is one inference session that takes and returns torch tensors;
:class:`OnnxDenoiser` adapts a UNet graph to the sampler's denoiser signature
``f(x_scaled, t, lq, mask) -> x0`` (``model.sampler``), so the one sampler runs on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import ExportError

CPU = ("CPUExecutionProvider",)


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """||a - b|| / ||b|| in float64 (b is the reference); inf if they differ in shape."""
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).double()
    if a.shape != b.shape:
        return float("inf")
    denom = float(b.norm())
    diff = float((a - b).norm())
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


class OrtGraph:
    """An onnxruntime session over torch tensors.

    threads: intra-op threads (default: torch's current setting, so one knob governs
    both runtimes in a process). providers: onnxruntime execution providers.
    """

    def __init__(self, path: str | Path, threads: Optional[int] = None,
                 providers: Sequence[str] = CPU):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = {i.name: list(i.shape) for i in self.session.get_inputs()}

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ExportError(f"{self.path.name} needs inputs {', '.join(missing)}")
        feeds = {n: inputs[n].detach().cpu().contiguous().numpy() for n in self.input_names}
        return [torch.from_numpy(o) for o in self.session.run(None, feeds)]


class OnnxDenoiser:
    """A UNet graph as the sampler's denoiser (``model.sampler.Denoiser``).

    ``predict_type`` as in ``Restorer.denoiser``: "xstart" returns the graph's output,
    "residual" returns ``lq - out``. Inputs must have the graph's tile size.
    """

    def __init__(self, graph: OrtGraph, predict_type: str = "xstart"):
        self.graph = graph
        self.residual = predict_type == "residual"
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
        out = self.graph(**inputs)[0].to(x.device, x.dtype)
        return lq - out if self.residual else out
