"""ONNX export of a restorer's networks, each graph checked with onnxruntime on writing.

    from export.onnx import export_model_dir
    result = export_model_dir("models/realsr_v3", tiles=[64, 128])   # -> models/realsr_v3/onnx/

Writes ``unet_t{N}.onnx`` per latent tile size ``N`` and, for latent models,
``vae_encoder.onnx`` and ``vae_decoder.onnx``, plus ``manifest.json`` (see
``export.manifest``). Contracts of the graphs: ``export.graphs``. A DiffIR model
directory writes one spatially dynamic ``diffir_s2.onnx`` instead (``export.diffir_graph``).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript tracer). With torch
2.13 the dynamo exporter fails on the Swin window attention (decomposing the reshape
after scaled_dot_product_attention), and it would need onnxscript; the tracer gives
standard-domain graphs (no custom ops) matching torch to about 1e-6.

Every graph is written to a temporary name, passed through ``onnx.checker``, scanned
for non-standard op domains, and run with onnxruntime (CPUExecutionProvider) against
the float32 torch module on seeded random inputs at the export shape and, for dynamic
spatial axes, a second shape. A relative error ``||ort - torch|| / ||torch||`` at or
above ``tolerance`` (1e-4) deletes the file and raises :class:`ExportCheckError` with the
numbers; only checked graphs get their final name.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from model.directory import resolve_model_dir

from .errors import ExportCheckError, ExportError
from .graphs import GraphSpec, decoder_graph, encoder_graph, unet_graph
from .manifest import (FORMAT_VERSION, MANIFEST, file_hash, graph_io, versions, weights_hash,
                       write_manifest)
from .ort import OrtGraph, rel_err

MIN_OPSET, MAX_OPSET = 17, 20     # 20: the TorchScript exporter's newest opset
DEFAULT_OPSET = 17
TOLERANCE = 1e-4
EXPORT_BATCH = 2
STANDARD_DOMAINS = ("", "ai.onnx")
EXPORTER = "torch.onnx.export (TorchScript tracer, dynamo=False)"

Progress = Callable[[int, int, dict], None]    # (done, total, graph record)


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote: the folder, its manifest dict and the graph paths."""

    directory: Path
    manifest: dict
    paths: list[Path]


def check_graph(spec: GraphSpec, path: str | Path, tolerance: float = TOLERANCE,
                seed: int = 0) -> list[dict]:
    """Run ``path`` with onnxruntime and ``spec.module`` with torch on the same random
    inputs (batch 1 and 2; for dynamic spatial axes the second check uses another size).

    Returns one ``{"shapes": {...}, "rel_err": e}`` per check; raises ExportCheckError
    as soon as ``e >= tolerance`` (or is NaN).
    """
    path = Path(path)
    graph = OrtGraph(path)
    spatial = any(len(axes) > 1 for axes in spec.dynamic_axes.values())
    gen = torch.Generator().manual_seed(seed)
    results = []
    for batch, alt in ((1, False), (2, spatial)):
        inputs = spec.sample(batch, gen, alt)
        with torch.no_grad():
            ref = spec.module(*(inputs[n] for n in spec.input_names)).float()
        out = graph(**inputs)[0]
        err = rel_err(out, ref)
        shapes = {n: tuple(inputs[n].shape) for n in spec.input_names}
        results.append({"shapes": {n: list(s) for n, s in shapes.items()}, "rel_err": err})
        if not err < tolerance:
            raise ExportCheckError(spec.file, err, tolerance, shapes)
    return results


def _trace_to_onnx(spec: GraphSpec, path: Path, opset: int) -> None:
    example = spec.sample(EXPORT_BATCH, torch.Generator().manual_seed(1234), False)
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings (shape-dependent Python values are constants by design: the
        # Swin mask per tile size) and the exporter's own deprecation notice.
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, tuple(example[n] for n in spec.input_names), str(path),
                          dynamo=False, opset_version=opset, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes,
                          do_constant_folding=True)


def _validate(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node
                     if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise ExportError(f"{path.name} uses non-standard ops: {', '.join(custom)}")


def write_graph(spec: GraphSpec, directory: str | Path, opset: int = DEFAULT_OPSET,
                tolerance: float = TOLERANCE, seed: int = 0) -> dict:
    """Export, validate and check one graph into ``directory``; returns its manifest
    record. A graph that fails the check is deleted and ExportCheckError raised."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / spec.file
    tmp = directory / (spec.file + ".tmp")
    start = time.perf_counter()
    try:
        _trace_to_onnx(spec, tmp, opset)
        exported = time.perf_counter()
        _validate(tmp)
        checks = check_graph(spec, tmp, tolerance, seed)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    inputs, outputs = graph_io(final)
    return {"name": spec.name, "kind": spec.kind, "file": spec.file, "sha256": file_hash(final),
            **spec.info, "inputs": inputs, "outputs": outputs,
            "rel_err": max(c["rel_err"] for c in checks), "checks": checks,
            "export_s": round(exported - start, 2),
            "check_s": round(time.perf_counter() - exported, 2)}


def graph_specs(restorer, tiles: Sequence[int]) -> list[GraphSpec]:
    """Specs for a restorer: one UNet graph per tile, then encoder and decoder (latent
    models only). The VAE graphs are exported and checked at the smallest tile."""
    if not tiles:
        raise ExportError("give at least one tile size")
    tiles = sorted({int(t) for t in tiles})
    max_t = max(0, restorer.schedule.num_steps - 1)
    specs = [unet_graph(restorer.unet, t, restorer.latent_unit, max_t) for t in tiles]
    if restorer.latent and restorer.autoencoder is not None:
        specs += [encoder_graph(restorer.autoencoder, tiles[0]),
                  decoder_graph(restorer.autoencoder, tiles[0])]
    return specs


def export_onnx(restorer, directory: str | Path, tiles: Sequence[int] = (64,),
                opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, seed: int = 0,
                progress: Optional[Progress] = None) -> OnnxExport:
    """Export every graph of ``restorer`` (a ``model.restorer.Restorer``) into
    ``directory`` and write its manifest.json. ``tiles``: latent tile sides, positive
    multiples of ``restorer.latent_unit``. ``progress(done, total, record)`` is called
    after each checked graph. A DiffIR restorer (``family == "diffir"``) exports its one
    dynamic graph instead (``export.diffir_onnx``; ``tiles``: at most one LQ size)."""
    if getattr(restorer, "family", "resshift") == "diffir":
        from .diffir_onnx import export_diffir
        return export_diffir(restorer, directory, tiles, opset, tolerance, seed, progress)
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    for module in (restorer.unet, restorer.autoencoder):
        if module is not None and any(p.dtype != torch.float32 for p in module.parameters()):
            raise ExportError("export works on float32 weights; load the model in float32")
    specs = graph_specs(restorer, tiles)
    directory = Path(directory)
    # a folder without manifest.json is an unfinished export: never leave an old
    # manifest describing graphs this run is about to replace
    (directory / MANIFEST).unlink(missing_ok=True)
    records = []
    for i, spec in enumerate(specs):
        records.append(write_graph(spec, directory, int(opset), tolerance, seed))
        if progress is not None:
            progress(i + 1, len(specs), records[-1])
    cfg = restorer.config
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": {"name": cfg.name, "task": cfg.task, "scale": cfg.scale,
                  "space": "latent" if restorer.latent else "pixel",
                  "predict_type": restorer.predict_type,
                  "weights_sha256": weights_hash([restorer.unet, restorer.autoencoder])},
        "opset": int(opset),
        "tiles": sorted({int(t) for t in tiles}),
        "tolerance": tolerance,
        "exporter": EXPORTER,
        "versions": versions(),
        "graphs": records,
    }
    write_manifest(directory, manifest)
    return OnnxExport(directory, manifest, [directory / r["file"] for r in records])


def default_out_dir(model_dir: str | Path) -> Path:
    """MODEL_DIR/onnx: exports live beside the model files, never over them."""
    return resolve_model_dir(model_dir) / "onnx"


def export_model_dir(model_dir: str | Path, out: str | Path | None = None,
                     tiles: Sequence[int] = (64,), opset: int = DEFAULT_OPSET,
                     tolerance: float = TOLERANCE,
                     progress: Optional[Progress] = None) -> OnnxExport:
    """Load a model directory (or bundled name) on the CPU in float32 and export it to
    ``out`` (default ``MODEL_DIR/onnx``)."""
    import model

    restorer = model.load(model_dir, device="cpu")
    target = Path(out) if out is not None else default_out_dir(model_dir)
    if target.resolve() == resolve_model_dir(model_dir).resolve():
        raise ExportError("refusing to export into the model directory itself; use "
                          "MODEL_DIR/onnx or another --out")
    return export_onnx(restorer, target, tiles, opset, tolerance, progress=progress)
