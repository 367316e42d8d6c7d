"""The checked ONNX graphs of one restorer, exported on first use.

    store = OnnxStore(restorer, "models/realsr_v3")
    store.unet(64, 64)        # -> models/realsr_v3/onnx/unet_t64.onnx (exported if missing)
    store.encoder(); store.decoder()

Graphs are looked up in ``manifest.json`` of the folder ``export.paths.ExportPaths``
resolves (beside the model, or the per-user cache for bundled / read-only models). A
manifest written from other weights (its ``weights_sha256`` differs) is stale: the
folder is exported again. A missing graph is exported and checked
(``export.onnx``: onnxruntime vs torch, rel. error < 1e-4) and added to the manifest.
Two processes exporting the same folder at once are not coordinated (each graph is
written to a temporary name and renamed, so readers never see half a file).
DiffIR models have their own two graphs: ``export.diffir_backend.DiffIROnnxStore``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from .errors import BackendUnavailable, ExportError
from .graphs import decoder_graph, encoder_graph, unet_graph
from .manifest import FORMAT_VERSION, MANIFEST, read_manifest, weights_hash, write_manifest
from .paths import ExportPaths

log = logging.getLogger("resshift.export")


def _unet_name(h: int, w: int) -> str:
    return f"unet_t{h}" if h == w else f"unet_t{h}x{w}"


class OnnxStore:
    """ONNX graphs of ``restorer`` (a ResShift ``Restorer`` in float32)."""

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 cache: Optional[Path] = None):
        if getattr(restorer, "family", "resshift") != "resshift":
            raise BackendUnavailable(f"OnnxStore holds ResShift graphs, not {restorer.family} "
                                     f"ones (DiffIR: export.diffir_backend.DiffIROnnxStore)")
        self.restorer = restorer
        self.weights = weights_hash([restorer.unet, restorer.autoencoder])
        self.cache = cache
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

    def unet(self, h: int, w: int) -> Path:
        """The UNet graph for latent tiles of h x w (exported on first use)."""
        return self._graph(_unet_name(h, w), (h, w))

    def encoder(self) -> Path:
        return self._graph("vae_encoder", None)

    def decoder(self) -> Path:
        return self._graph("vae_decoder", None)

    def _graph(self, name: str, tile: Optional[tuple[int, int]]) -> Path:
        if name.startswith("vae") and not self.restorer.latent:
            raise ExportError("pixel-space models have no VAE graphs")
        found = self._lookup(name)
        if found is not None:
            return found
        if not self.paths.onnx_writable():
            cached = ExportPaths.cached(self.weights, self.cache)
            log.info("%s is read-only; ONNX graphs go to %s", self.directory, cached.onnx)
            self.paths = cached
            found = self._lookup(name)
            if found is not None:
                return found
        self._export(name, tile)
        found = self._lookup(name)
        if found is None:      # pragma: no cover - export_onnx/write_graph raise instead
            raise ExportError(f"exporting {name} to {self.directory} left no graph")
        return found

    def _lookup(self, name: str) -> Optional[Path]:
        m = self.manifest()
        if m is None:
            return None
        for g in m["graphs"]:
            if g["name"] == name and (self.directory / g["file"]).is_file():
                return self.directory / g["file"]
        return None

    def _export(self, name: str, tile: Optional[tuple[int, int]]) -> None:
        from .onnx import export_onnx, write_graph

        r = self.restorer
        m = self.manifest()
        log.info("exporting %s of %s to %s (first use; checked against torch)", name,
                 r.config.name, self.directory)
        if m is None:
            # a fresh folder: the standard export (UNet at the square tile, VAE graphs)
            side = min(tile) if tile else r.tile_options(None).latent_tile
            m = export_onnx(r, self.directory, tiles=[side]).manifest
            if tile is None or tile[0] == tile[1]:
                return
        spec = {"vae_encoder": lambda: encoder_graph(r.autoencoder, min(m["tiles"])),
                "vae_decoder": lambda: decoder_graph(r.autoencoder, min(m["tiles"]))}.get(name)
        if spec is None:
            spec = lambda: unet_graph(r.unet, tile[0], r.latent_unit,  # noqa: E731
                                      max(0, r.schedule.num_steps - 1), width=tile[1])
        record = write_graph(spec(), self.directory, int(m["opset"]), float(m["tolerance"]))
        m["graphs"] = [g for g in m["graphs"] if g["name"] != name] + [record]
        if tile is not None and tile[0] == tile[1]:
            m["tiles"] = sorted(set(m["tiles"]) | {tile[0]})
        write_manifest(self.directory, m)
