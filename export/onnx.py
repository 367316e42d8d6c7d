"""ONNX export of a restorer's networks, each graph checked with onnxruntime on writing.

    from export.families import export_model_dir
    result = export_model_dir("models/realsr_v3", tiles=[64, 128])   # -> models/realsr_v3/onnx/

Writes ``unet_t{N}.onnx`` per latent tile size ``N`` and, for latent models,
``vae_encoder.onnx`` and ``vae_decoder.onnx``, plus ``manifest.json`` (see
``export.manifest``). Contracts of the graphs: ``export.graphs``. A DiffIR model
directory writes one spatially dynamic ``diffir_s2.onnx`` instead (``export.diffir_graph``).

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript tracer). With torch
2.13 the dynamo exporter fails on the Swin window attention (decomposing the reshape
after scaled_dot_product_attention), and it would need onnxscript; the tracer gives
standard-domain graphs (no custom ops) matching torch to about 1e-6.

With ``precisions`` (``export.fp16.GraphPrecisions``, CLI ``--precision fp16`` or
``unet=fp16,encoder=fp32,...``) the graphs named fp16 also get a float16 twin,
``unet_t64.fp16.onnx`` etc., converted from the checked float32 graph by
``export.fp16.convert_fp16`` (float32 inputs and outputs; norms, softmax, timestep
embedding and codebook lookup kept float32). Manifest records carry their
``precision``.

Every graph is written to a temporary name, passed through ``onnx.checker``, scanned
for non-standard op domains, and run with onnxruntime (CPUExecutionProvider) against
the float32 torch module on seeded random inputs: batch 1 at the export shape and
batch 2 at, for dynamic spatial axes, a second shape. What is measured and bounded
depends on the graph (``export.fidelity.CHECK_LIMITS``, one table for both
precisions): the decoder's image PSNR in the 8-bit range, the encoder's latent PSNR
and share of positions whose nearest codebook entry changes, the UNet's x0 PSNR.
Graphs of other kinds (DiffIR) keep the relative-error bound ``tolerance`` (1e-4). A
graph outside its limits is deleted and :class:`ExportCheckError` raised with the
numbers; only checked graphs get their final name, and the measured values go to the
manifest.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from model.directory import resolve_model_dir

from .errors import ExportCheckError, ExportError
from .fidelity import LOWER_BOUNDS, graph_measures, limits_for, violations
from .fp16 import FP16, FP32, GraphPrecisions, convert_fp16
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
Limits = Mapping[tuple[str, str], Mapping[str, float]]   # as export.fidelity.CHECK_LIMITS


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote: the folder, its manifest dict and the graph paths."""

    directory: Path
    manifest: dict
    paths: list[Path]


def _json_number(value: float) -> float | str:
    return round(value, 6) if math.isfinite(value) else str(value)


def check_graph(spec: GraphSpec, path: str | Path, tolerance: float = TOLERANCE,
                seed: int = 0, precision: str = FP32,
                limits: Optional[Limits] = None) -> list[dict]:
    """Run ``path`` with onnxruntime and ``spec.module`` with torch (float32) on the same
    random inputs: batch 1 at the export shape, batch 2 at another spatial size where
    the graph has dynamic spatial axes.

    The measures and limits are ``CHECK_LIMITS[(spec.kind, precision)]`` (``limits``:
    another table of the same form); kinds not in the table are held to relative error
    < ``tolerance``. Returns one ``{"shapes": {...}, "rel_err": e, <measures>}`` per check;
    raises ExportCheckError at the first measure outside its limit (or NaN).
    """
    path = Path(path)
    graph = OrtGraph(path)
    bounds = limits_for(spec.kind, precision, limits)
    spatial = any(len(axes) > 1 for axes in spec.dynamic_axes.values())
    gen = torch.Generator().manual_seed(seed)
    results = []
    for batch, alt in ((1, False), (2, spatial)):
        inputs = spec.sample(batch, gen, alt)
        with torch.no_grad():
            ref = spec.module(*(inputs[n] for n in spec.input_names)).float()
        out = graph(**inputs)[0].float()
        err = rel_err(out, ref)
        shapes = {n: tuple(inputs[n].shape) for n in spec.input_names}
        record = {"shapes": {n: list(s) for n, s in shapes.items()}, "rel_err": err}
        if bounds is None:
            results.append(record)
            if not err < tolerance:
                raise ExportCheckError(path.name, err, tolerance, shapes)
            continue
        measures = graph_measures(spec.kind, out, ref, spec.codebook)
        record.update({k: _json_number(v) for k, v in measures.items()})
        results.append(record)
        bad = violations(measures, bounds)
        if bad:
            key, value, limit = bad[0]
            raise ExportCheckError(path.name, err, limit, shapes, measure=key, value=value)
    return results


def _worst(checks: list[dict], limits: Optional[dict]) -> dict:
    """The worst value of each bounded measure over the checks (for the manifest)."""
    if not limits:
        return {}
    out = {}
    for key in limits:
        values = [c[key] for c in checks if key in c]
        numeric = [float(v) for v in values]
        if numeric:
            worst = min(numeric) if key in LOWER_BOUNDS else max(numeric)
            out[key] = _json_number(worst)
    return out


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
                tolerance: float = TOLERANCE, seed: int = 0, precision: str = FP32,
                limits: Optional[Limits] = None) -> dict:
    """Export, validate and check one graph into ``directory``; returns its manifest
    record. A graph that fails the check is deleted and ExportCheckError raised.

    ``precision`` "fp16": the float16 twin (``spec.file_for("fp16")``), converted from
    the float32 graph in ``directory`` when it is there (else traced afresh)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    file = spec.file_for(precision)
    final = directory / file
    tmp = directory / (file + ".tmp")
    source_tmp = directory / (spec.file + ".src.tmp")
    extra: dict = {}
    start = time.perf_counter()
    try:
        if precision == FP32:
            _trace_to_onnx(spec, tmp, opset)
        else:
            import onnx

            source = directory / spec.file
            if not source.is_file():
                _trace_to_onnx(spec, source_tmp, opset)
                source = source_tmp
            half, report = convert_fp16(onnx.load(str(source)))
            onnx.save(half, str(tmp))
            source_tmp.unlink(missing_ok=True)
            extra = {"fp16": report.as_dict()}
        exported = time.perf_counter()
        _validate(tmp)
        checks = check_graph(spec, tmp, tolerance, seed, precision, limits)
    except BaseException:
        tmp.unlink(missing_ok=True)
        source_tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    inputs, outputs = graph_io(final)
    bounds = limits_for(spec.kind, precision, limits)
    return {"name": spec.name, "kind": spec.kind, "precision": precision, "file": file,
            "sha256": file_hash(final), **spec.info, "inputs": inputs, "outputs": outputs,
            "rel_err": max(c["rel_err"] for c in checks),
            **({"measures": _worst(checks, bounds), "limits": bounds} if bounds else {}),
            "checks": checks, **extra,
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


def export_resshift(restorer, directory: str | Path, tiles: Sequence[int] = (64,),
                    opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, seed: int = 0,
                    progress: Optional[Progress] = None,
                    precisions: "GraphPrecisions | str | None" = None,
                    limits: Optional[Limits] = None) -> OnnxExport:
    """Export every graph of ``restorer`` (a ``model.restorer.Restorer``) into
    ``directory`` and write its manifest.json. ``tiles``: latent tile sides, positive
    multiples of ``restorer.latent_unit``. ``precisions``: which graphs also get a
    float16 twin (``export.fp16.GraphPrecisions`` or its string; default none).
    ``limits``: a check table replacing ``export.fidelity.CHECK_LIMITS``.
    ``progress(done, total, record)`` is called after each checked graph.
    ``export.families.export_onnx`` calls this for ResShift restorers."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to {MAX_OPSET}")
    for module in (restorer.unet, restorer.autoencoder):
        if module is not None and any(p.dtype != torch.float32 for p in module.parameters()):
            raise ExportError("export works on float32 weights; load the model in float32")
    try:
        precisions = GraphPrecisions.parse(precisions or FP32)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    specs = graph_specs(restorer, tiles)
    jobs = [(spec, p) for spec in specs
            for p in ((FP32, FP16) if precisions.of(spec.kind) == FP16 else (FP32,))]
    directory = Path(directory)
    # a folder without manifest.json is an unfinished export: never leave an old
    # manifest describing graphs this run is about to replace
    (directory / MANIFEST).unlink(missing_ok=True)
    records = []
    for i, (spec, precision) in enumerate(jobs):
        records.append(write_graph(spec, directory, int(opset), tolerance, seed, precision,
                                   limits))
        if progress is not None:
            progress(i + 1, len(jobs), records[-1])
    manifest = base_manifest(restorer, tiles, opset, tolerance, precisions, records)
    write_manifest(directory, manifest)
    return OnnxExport(directory, manifest, [directory / r["file"] for r in records])


def base_manifest(restorer, tiles: Sequence[int], opset: int = DEFAULT_OPSET,
                  tolerance: float = TOLERANCE,
                  precisions: "GraphPrecisions | str | None" = None,
                  records: Sequence[dict] = ()) -> dict:
    """The manifest of a ResShift restorer's export folder holding ``records``."""
    cfg = restorer.config
    return {
        "format_version": FORMAT_VERSION,
        "model": {"name": cfg.name, "task": cfg.task, "scale": cfg.scale,
                  "space": "latent" if restorer.latent else "pixel",
                  "predict_type": restorer.predict_type,
                  "weights_sha256": weights_hash([restorer.unet, restorer.autoencoder])},
        "opset": int(opset),
        "tiles": sorted({int(t) for t in tiles}),
        "tolerance": tolerance,
        "precisions": str(GraphPrecisions.parse(precisions or FP32)),
        "exporter": EXPORTER,
        "versions": versions(),
        "graphs": list(records),
    }


def default_out_dir(model_dir: str | Path) -> Path:
    """MODEL_DIR/onnx: exports live beside the model files, never over them."""
    return resolve_model_dir(model_dir) / "onnx"
