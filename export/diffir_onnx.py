"""ONNX export of a DiffIR S2 model: its one graph (``export.diffir_graph``) + manifest.

    from export.families import export_model_dir
    export_model_dir("models/diffir_x4")          # -> models/diffir_x4/onnx/diffir_s2.onnx

``export.families.export_onnx`` hands DiffIR restorers to :func:`export_diffir`; the
graph goes through the same writer as ResShift's (checker, standard domains only,
onnxruntime vs float32 torch below ``tolerance`` at two batch sizes and two spatial
sizes, else ExportCheckError and no file). The manifest has the
ResShift layout with ``model.family = "diffir"`` and ``tiles`` empty: the graph is
spatially dynamic, so there are no per-tile graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from .diffir_graph import diffir_graph
from .errors import ExportError
from .manifest import FORMAT_VERSION, MANIFEST, versions, weights_hash, write_manifest
from .onnx import (DEFAULT_OPSET, EXPORTER, MAX_OPSET, MIN_OPSET, TOLERANCE, OnnxExport,
                   Progress, write_graph)

DEFAULT_SIZE = 64     # LQ pixels: a multiple of every DiffIR input multiple (8, 16, 32)


def export_size(restorer, tiles: Sequence[int]) -> int:
    """The LQ side the graph is traced and checked at: the one size in ``tiles`` (the
    CLI's ``--tile``), or DEFAULT_SIZE rounded up to the model's input multiple."""
    sizes = sorted({int(t) for t in tiles})
    if len(sizes) > 1:
        raise ExportError(f"a DiffIR model exports one spatially dynamic graph; give at most "
                          f"one size (the LQ side it is traced and checked at), got {sizes}")
    if sizes:
        return sizes[0]
    m = int(restorer.input_multiple)
    return -(-DEFAULT_SIZE // m) * m


def export_diffir(restorer, directory: str | Path, tiles: Sequence[int] = (DEFAULT_SIZE,),
                  opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, seed: int = 0,
                  progress: Optional[Progress] = None) -> OnnxExport:
    """Export ``restorer`` (a ``DiffIRRestorer``) as ``diffir_s2.onnx`` + manifest.json
    into ``directory``. ``tiles``: at most one LQ size, a multiple of the model's
    ``input_multiple`` (see :func:`export_size`)."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    if any(p.dtype != torch.float32 for p in restorer.network.parameters()):
        raise ExportError("export works on float32 weights; load the model in float32")
    if restorer.device.type != "cpu":
        raise ExportError("load the model on the CPU to export it (device='cpu')")
    spec = diffir_graph(restorer, export_size(restorer, tiles))
    directory = Path(directory)
    (directory / MANIFEST).unlink(missing_ok=True)     # as export_onnx: no stale manifest
    record = write_graph(spec, directory, int(opset), tolerance, seed)
    if progress is not None:
        progress(1, 1, record)
    cfg = restorer.config
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"name": restorer.name, "family": "diffir", "task": cfg.task,
                  "scale": cfg.scale, "space": "pixel", "input_multiple": cfg.input_multiple,
                  "steps": restorer.steps,
                  "weights_sha256": weights_hash([restorer.network])},
        "opset": int(opset),
        "tiles": [],
        "tolerance": tolerance,
        "exporter": EXPORTER,
        "versions": versions(),
        "graphs": [record],
    }
    write_manifest(directory, manifest)
    return OnnxExport(directory, manifest, [directory / record["file"]])
