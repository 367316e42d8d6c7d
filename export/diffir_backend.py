"""DiffIR S2 on onnxruntime: the store of its two graphs and the backend that runs them.

    from export.families import create_backend
    backend = create_backend("onnxruntime", restorer, model_dir="models/diffir_x4")
    sr = restorer.using(backend).restore(image, seed=0)

What runs where (``DiffIRRestorer.sample`` decides by the tile plan, the backend only
answers two calls):

- a whole image (the official forward, every input up to the whole-image limit):
  ``diffir_s2.onnx`` with the padded LQ and the image's one prior draw x_T. CPEN, the
  4 IPR steps and the DIRformer all run inside the graph (``forward``).
- a tiled image: the tiles must share one IPR computed from the WHOLE image, which
  ``diffir_s2`` cannot give (it would run CPEN and the IPR loop on each tile, i.e. a
  different prior per tile). So CPEN (over tiles with a halo, ``tiled_condition``) and
  the tiny IPR loop stay on torch, exactly as the torch path computes them, and each
  tile's DIRformer, where the time goes, runs ``diffir_dirformer.onnx`` with that IPR
  (``dirformer``). A tiled result is thus the torch tiled result up to onnxruntime's
  float error, and per-tile priors never appear.

Both graphs are spatially dynamic, so one file each serves every size. They live in the
folder ``export.paths`` resolves (MODEL_DIR/onnx, or the per-user cache for read-only or
in-memory models) and are exported and checked on first use, like ResShift's
(``export.store``): ``diffir_s2`` by ``export.diffir_onnx.export_diffir`` (it writes
the manifest), ``diffir_dirformer`` added to that manifest the first time a tile needs it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

import torch

from model.diffir.restorer import DiffIRRestorer

from .diffir_graph import DIRFORMER_GRAPH, GRAPH_NAME, diffir_graph, dirformer_graph
from .diffir_onnx import export_diffir, export_size
from .errors import BackendUnavailable
from .manifest import weights_hash, write_manifest
from .onnx import write_graph
from .ort import CUDA_EP, ORT_INSTALL, ort_providers
from .ort_sessions import OrtSessions
from .paths import ExportPaths
from .store import OnnxStore

log = logging.getLogger("resshift.export")


class DiffIROnnxStore(OnnxStore):
    """The checked ONNX graphs of a ``DiffIRRestorer`` (float32, CPU export)."""

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 cache: Optional[Path] = None):
        if not isinstance(restorer, DiffIRRestorer):
            raise BackendUnavailable(f"DiffIROnnxStore takes DiffIR restorers, not a "
                                     f"{type(restorer).__name__}")
        self.restorer = restorer
        self.weights = weights_hash([restorer.network])
        self.cache = cache
        self.paths = ExportPaths.resolve(model_dir, self.weights, cache)

    def forward(self) -> Path:
        """``diffir_s2.onnx``: (lq, noise) -> sr, the whole forward."""
        return self._graph(GRAPH_NAME, None)

    def dirformer(self) -> Path:
        """``diffir_dirformer.onnx``: (lq, ipr) -> sr, the DIRformer alone (tiles)."""
        return self._graph(DIRFORMER_GRAPH, None)

    def _export(self, name: str, tile: Optional[tuple[int, int]]) -> None:
        r = self.restorer
        log.info("exporting %s of %s to %s (first use; checked against torch)", name,
                 r.name, self.directory)
        m = self.manifest()
        if m is None:       # a fresh folder: the standard export writes diffir_s2 + manifest
            m = export_diffir(r, self.directory).manifest
            if name == GRAPH_NAME:
                return
        size = int(next((g.get("export_size") for g in m["graphs"] if g.get("export_size")),
                        export_size(r, ())))
        spec = (diffir_graph if name == GRAPH_NAME else dirformer_graph)(r, size)
        record = write_graph(spec, self.directory, int(m["opset"]), float(m["tolerance"]))
        m["graphs"] = [g for g in m["graphs"] if g["name"] != name] + [record]
        write_manifest(self.directory, m)


class DiffIROnnxBackend(OrtSessions):
    """onnxruntime sessions over a DiffIR model's two graphs (float32).

    ``forward(lq, noise)`` runs the whole model (``diffir_s2``); ``dirformer(lq, ipr)``
    one batch of tiles (``diffir_dirformer``). Inputs are padded to the input multiple;
    outputs come back on the inputs' device, unclamped. model_dir / threads / cache as
    for ``export.backends.OnnxRuntimeBackend``.
    """

    store_class = DiffIROnnxStore

    def forward(self, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Padded LQ (B, 3, h, w) in [0, 1] and prior draw (B, 256) -> SR (B, 3, sh, sw)."""
        graph = self._session(GRAPH_NAME, self.store.forward)
        return graph(lq=lq.float(), noise=noise.float())[0].to(lq.device)

    def dirformer(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        """Padded LQ tiles (B, 3, h, w) and their IPRs (B, 256) -> SR (B, 3, sh, sw)."""
        graph = self._session(DIRFORMER_GRAPH, self.store.dirformer)
        return graph(lq=lq.float(), ipr=ipr.float())[0].to(lq.device)

    def prepare(self, latent_tiles=None) -> list[str]:
        """Export (when missing), check and open both graphs now (both are spatially
        dynamic, so no tile shapes are needed)."""
        self._session(GRAPH_NAME, self.store.forward)
        self._session(DIRFORMER_GRAPH, self.store.dirformer)
        return [GRAPH_NAME, DIRFORMER_GRAPH]

    def describe(self) -> str:
        where = "CUDA" if self.providers[0] == CUDA_EP else "CPU"
        return f"onnxruntime ({where}, float32, graphs in {self.store.directory})"


def choose_diffir_backend(restorer) -> tuple[str, str]:
    """(backend name, why) for ``auto`` with a DiffIR model: onnxruntime on the CPU when
    it and onnx are installed (about 1.5x torch float32 there, docs/diffir.md); torch on
    a GPU, the only path measured there. The first use exports and checks the graph."""
    if restorer.device.type == "cuda":
        return "torch", "DiffIR on a GPU: only torch is measured and supported there"
    try:
        ort_providers(restorer.device)
    except BackendUnavailable:
        return "torch", f"on the CPU without onnxruntime ({ORT_INSTALL})"
    if importlib.util.find_spec("onnx") is None:
        return "torch", f"on the CPU without onnx ({ORT_INSTALL})"
    return "onnxruntime", ("on the CPU onnxruntime float32 runs DiffIR about 1.5x faster "
                           "than torch float32 (measured, docs/diffir.md)")
