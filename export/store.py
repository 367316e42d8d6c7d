"""The checked ONNX graphs of one restorer, exported on first use, in float32 or float16.

    store = OnnxStore(restorer, "models/realsr_v3")
    store.unet(64, 64)        # -> models/realsr_v3/onnx/unet_t64.onnx (exported if missing)
    store.encoder(); store.decoder()
    store.unet(64, 64, precision="fp16")   # -> unet_t64.fp16.onnx (float16 twin)
    store.graph("vae_decoder", "fp16")     # the same by graph kind
    OnnxStore(restorer, d, precisions="unet=fp16,encoder=fp16,decoder=fp32").unet(64, 64)

Precision: each call may name one (``"fp32"`` / ``"fp16"``); without it the store's
``precisions`` (an ``export.fp16.GraphPrecisions``, default all fp32) says which graph of
each kind is handed out. A float16 graph is converted from the float32 one (which is
exported first when missing) by ``export.fp16.convert_fp16`` and checked against the
float32 torch module with the fp16 limits of ``export.fidelity.CHECK_LIMITS``; both
files stay side by side (``unet_t64.onnx``, ``unet_t64.fp16.onnx``), one manifest record
each, told apart by their ``precision``. TensorRT builds its fp16 engines from these.

Graphs are looked up in ``manifest.json`` of the folder ``export.paths.ExportPaths``
resolves (beside the model, or the per-user cache for bundled / read-only models). A
manifest written from other weights (its ``weights_sha256`` differs) is stale: the
folder is exported again. A missing graph is exported and checked (``export.onnx``;
a graph outside its limits raises ``ExportCheckError``) and added to the manifest.
Two processes exporting the same folder at once are not coordinated (each graph is
written to a temporary name and renamed, so readers never see half a file).
DiffIR models have their own two graphs: ``export.diffir_backend.DiffIROnnxStore``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Optional

import torch

from model.restorer import Restorer

from .errors import BackendUnavailable, ExportError
from .fp16 import FP32, PRECISION_NAMES, GraphPrecisions
from .graphs import decoder_graph, encoder_graph, unet_graph
from .manifest import FORMAT_VERSION, MANIFEST, read_manifest, weights_hash, write_manifest
from .onnx import base_manifest, write_graph
from .paths import ExportPaths

log = logging.getLogger("resshift.export")


def _unet_name(h: int, w: int) -> str:
    return f"unet_t{h}" if h == w else f"unet_t{h}x{w}"


class OnnxStore:
    """ONNX graphs of ``restorer`` (a ResShift ``Restorer`` in float32)."""

    KINDS = ("unet", "vae_encoder", "vae_decoder")

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 cache: Optional[Path] = None,
                 precisions: "GraphPrecisions | str | None" = None,
                 limits: Optional[dict] = None):
        if not isinstance(restorer, Restorer):
            raise BackendUnavailable(f"OnnxStore holds ResShift graphs, not those of a "
                                     f"{type(restorer).__name__}")
        self.restorer = restorer
        self.weights = weights_hash([restorer.unet, restorer.autoencoder])
        self.cache = cache
        try:
            self.precisions = GraphPrecisions.parse(precisions or FP32)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        self.limits = limits          # None: export.fidelity.CHECK_LIMITS
        self.paths = ExportPaths.resolve(model_dir, self.weights, cache)

    @property
    def directory(self) -> Path:
        return self.paths.onnx

    def manifest(self) -> Optional[dict]:
        """The folder's manifest when it describes these weights, else None."""
        if not (self.directory / MANIFEST).is_file():
            return None
        try:
            m = read_manifest(self.directory)
        except ValueError:
            return None
        ok = (m.get("format_version") == FORMAT_VERSION
              and m.get("model", {}).get("weights_sha256") == self.weights)
        return m if ok else None

    def unet(self, h: int, w: int, precision: Optional[str] = None) -> Path:
        """The UNet graph for latent tiles of h x w (exported on first use)."""
        return self.graph("unet", precision, (h, w))

    def encoder(self, precision: Optional[str] = None) -> Path:
        return self.graph("vae_encoder", precision)

    def decoder(self, precision: Optional[str] = None) -> Path:
        return self.graph("vae_decoder", precision)

    def graph(self, kind: str, precision: Optional[str] = None,
              tile: Optional[tuple[int, int]] = None) -> Path:
        """The graph of ``kind`` ("unet", "vae_encoder", "vae_decoder") in ``precision``
        ("fp32", "fp16"; None: the store's ``precisions``); ``tile`` (latent h, w) for
        the UNet. Exported and checked on first use."""
        if kind not in self.KINDS:
            raise ExportError(f"unknown graph kind {kind!r}; use one of {', '.join(self.KINDS)}")
        precision = self.precisions.of(kind) if precision is None else precision
        if precision not in PRECISION_NAMES:
            raise ExportError(f"unknown graph precision {precision!r}; use "
                              f"{' or '.join(PRECISION_NAMES)}")
        if kind == "unet":
            if tile is None:
                raise ExportError("the UNet graph needs its latent tile (h, w)")
            h, w = int(tile[0]), int(tile[1])
            return self._graph(_unet_name(h, w), (h, w), precision)
        return self._graph(kind, None, precision)

    def _graph(self, name: str, tile: Optional[tuple[int, int]], precision: str = FP32
               ) -> Path:
        if name.startswith("vae") and not self.restorer.latent:
            raise ExportError("pixel-space models have no VAE graphs")
        found = self._lookup(name, precision)
        if found is not None:
            return found
        if not self.paths.onnx_writable():
            cached = ExportPaths.cached(self.weights, self.cache)
            log.info("%s is read-only; ONNX graphs go to %s", self.directory, cached.onnx)
            self.paths = cached
            found = self._lookup(name, precision)
            if found is not None:
                return found
        if precision == FP32:
            self._export(name, tile)      # (subclasses with float32 graphs only: 2 args)
        else:
            # the float16 twin is converted from the checked float32 graph
            self._graph(name, tile, FP32)
            self._export(name, tile, precision)
        found = self._lookup(name, precision)
        if found is None:      # pragma: no cover - export_onnx/write_graph raise instead
            raise ExportError(f"exporting {name} ({precision}) to {self.directory} left no "
                              f"graph")
        return found

    def _lookup(self, name: str, precision: str = FP32) -> Optional[Path]:
        m = self.manifest()
        if m is None:
            return None
        for g in m["graphs"]:
            if (g["name"] == name and g.get("precision", FP32) == precision
                    and (self.directory / g["file"]).is_file()):
                return self.directory / g["file"]
        return None

    def _export(self, name: str, tile: Optional[tuple[int, int]], precision: str = FP32
                ) -> None:
        r = self.restorer
        m = self.manifest()
        log.info("exporting %s (%s) of %s to %s (first use; checked against torch)", name,
                 precision, r.config.name, self.directory)
        if m is None:
            # a fresh folder: an empty manifest, then graph by graph as they are asked
            # for, so that one graph failing its check leaves the others usable
            side = min(tile) if tile else r.tile_options(None).latent_tile
            self.directory.mkdir(parents=True, exist_ok=True)
            m = base_manifest(r, [side])
            write_manifest(self.directory, m)
        spec = {"vae_encoder": lambda: encoder_graph(r.autoencoder, min(m["tiles"])),
                "vae_decoder": lambda: decoder_graph(r.autoencoder, min(m["tiles"]))}.get(name)
        if spec is None:
            spec = lambda: unet_graph(r.unet, tile[0], r.latent_unit,  # noqa: E731
                                      max(0, r.schedule.num_steps - 1), width=tile[1])
        record = write_graph(spec(), self.directory, int(m["opset"]), float(m["tolerance"]),
                             precision=precision, limits=self.limits)
        m["graphs"] = [g for g in m["graphs"]
                       if not (g["name"] == name and g.get("precision", FP32) == precision)]
        m["graphs"].append(record)
        if tile is not None and tile[0] == tile[1]:
            m["tiles"] = sorted(set(m["tiles"]) | {tile[0]})
        write_manifest(self.directory, m)


def export_copy(restorer):
    """The restorer with float32 CPU copies of its modules, for tracing exports.

    Export tracing builds CPU sample inputs; tracing the live modules of a CUDA (or
    half-precision) restorer with them fails on a device mismatch. The copy is made
    tensor by tensor straight to the CPU (no second set of weights on the GPU); the
    live modules are not moved. A float32 CPU restorer is returned as it is. The
    weights hash of the copy equals the live one's for float32 weights, so graph
    folders stay shared between CPU and GPU workers.
    """
    modules = {k: m for k, m in vars(restorer).items() if isinstance(m, torch.nn.Module)}
    tensors = [t for m in modules.values() for t in (*m.parameters(), *m.buffers())]
    if restorer.device.type == "cpu" and all(t.device.type == "cpu" and (
            not t.is_floating_point() or t.dtype == torch.float32) for t in tensors):
        return restorer

    def cpu32(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu")
        return t.float() if t.is_floating_point() else t.clone()
    view = copy.copy(restorer)
    for key, module in modules.items():
        # deepcopy with every parameter and buffer pre-seeded in the memo by its CPU
        # float32 twin: the module structure is copied, the tensors never duplicated on
        # the GPU
        memo: dict[int, object] = {}
        for p in module.parameters():
            memo[id(p)] = torch.nn.Parameter(cpu32(p), requires_grad=False)
        for b in module.buffers():
            memo[id(b)] = cpu32(b)
        twin = copy.deepcopy(module, memo)
        if getattr(twin, "dtype", None) == torch.float16:     # SwinUNet(use_fp16=True)
            twin.dtype = torch.float32
        setattr(view, key, twin.eval())
    view.device = torch.device("cpu")
    view.backend = None
    return view
