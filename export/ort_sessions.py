"""onnxruntime sessions over a graph store: the part the ResShift and DiffIR
onnxruntime backends share."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from .errors import BackendUnavailable
from .ort import ORT_INSTALL, OrtGraph, ort_providers
from .store import OnnxStore, export_copy


class OrtSessions:
    """onnxruntime sessions over a store that exports and checks graphs on demand, one
    session per graph, opened on first use. Subclasses pick the store."""

    name = "onnxruntime"
    store_class: type = OnnxStore     # subclasses with other graphs give their own store

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 threads: Optional[int] = None, cache: Optional[Path] = None,
                 tf32: bool = False):
        if importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(f"the onnxruntime backend exports graphs with the onnx "
                                     f"package; install with {ORT_INSTALL}")
        self.providers = ort_providers(restorer.device)
        self.restorer = restorer.using(None)
        self.device = restorer.device
        self.tf32 = tf32
        # exports trace a float32 CPU copy; the live (maybe CUDA) modules stay put
        self.store = self.store_class(export_copy(self.restorer), model_dir, cache)
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def _session(self, key: str, path_fn, fixed_shape: bool = False):
        """fixed_shape: the graph always runs at one input shape (a UNet tile graph),
        so onnxruntime's CPU arena and memory pattern pay; spatially dynamic graphs run
        without them (``OrtGraph``'s ``arena``)."""
        if key not in self._sessions:
            self._sessions[key] = OrtGraph(path_fn(), self.threads, self.providers,
                                           device=self.device, tf32=self.tf32,
                                           arena=fixed_shape)
        return self._sessions[key]
