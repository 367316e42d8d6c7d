"""The export layer's entry points, for a model of any family.

    export_model_dir("models/realsr_v3", tiles=[64])     # ONNX graphs beside the model
    backend = create_backend("auto", restorer, model_dir="models/realsr_v3")
    image = restorer.using(backend).restore(lq, seed=1)

Each model family registers what it exports and which backends run it, by the
restorer's type (``functools.singledispatch``): ResShift (``model.restorer.Restorer``:
UNet and VQGAN graphs, torch / onnxruntime / TensorRT) and DiffIR
(``model.diffir.restorer.DiffIRRestorer``: one dynamic graph, torch / onnxruntime).
Callers never ask a model which family it is; a new family registers its own
:func:`export_onnx` and :func:`family_backends` here and nothing else changes.

This module sits on top of the other export modules (it imports them, none imports it),
which is what keeps the family-specific modules free of each other.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import model
from model.diffir.restorer import DiffIRRestorer
from model.directory import resolve_model_dir
from model.restorer import Restorer

from .backends import (BACKENDS, Backend, OnnxRuntimeBackend, SplitBackend, TensorRTBackend,
                       TorchBackend, apply_tf32, resolve_precision)
from .diffir_backend import DiffIROnnxBackend, choose_diffir_backend
from .diffir_onnx import export_diffir
from .errors import BackendUnavailable, ExportError
from .fallback import TorchFallback
from .fp16 import GraphPrecisions
from .onnx import (DEFAULT_OPSET, TOLERANCE, Limits, OnnxExport, Progress, default_out_dir,
                   export_resshift)
from .ort import CUDA_EP, ORT_INSTALL, ort_providers
from .tensorrt import unavailable_reason

log = logging.getLogger("resshift.export")


# -- ONNX export ---------------------------------------------------------------------------

@functools.singledispatch
def export_onnx(restorer, directory: str | Path, tiles: Sequence[int] = (64,),
                opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE, seed: int = 0,
                progress: Optional[Progress] = None,
                precisions: "GraphPrecisions | str | None" = None,
                limits: Optional[Limits] = None) -> OnnxExport:
    """Export every graph of ``restorer`` into ``directory`` with its manifest.json,
    each graph checked against torch on writing. ``tiles``: latent tile sides
    (ResShift) or at most one LQ side (DiffIR). ``precisions``: graphs that also get a
    float16 twin (ResShift only). ``progress(done, total, record)`` after each graph."""
    raise ExportError(f"no ONNX export for a {type(restorer).__name__}")


@export_onnx.register
def _(restorer: Restorer, directory, tiles=(64,), opset=DEFAULT_OPSET, tolerance=TOLERANCE,
      seed=0, progress=None, precisions=None, limits=None) -> OnnxExport:
    return export_resshift(restorer, directory, tiles, opset, tolerance, seed, progress,
                           precisions, limits)


@export_onnx.register
def _(restorer: DiffIRRestorer, directory, tiles=(64,), opset=DEFAULT_OPSET,
      tolerance=TOLERANCE, seed=0, progress=None, precisions=None, limits=None
      ) -> OnnxExport:
    if precisions is not None and GraphPrecisions.parse(precisions).any_fp16:
        raise ExportError("float16 graphs are exported for ResShift models only")
    return export_diffir(restorer, directory, tiles, opset, tolerance, seed, progress)


def export_model_dir(model_dir: str | Path, out: str | Path | None = None,
                     tiles: Sequence[int] = (64,), opset: int = DEFAULT_OPSET,
                     tolerance: float = TOLERANCE,
                     progress: Optional[Progress] = None,
                     precisions: "GraphPrecisions | str | None" = None) -> OnnxExport:
    """Load a model directory (or bundled name) on the CPU in float32 and export it to
    ``out`` (default ``MODEL_DIR/onnx``); ``precisions`` as :func:`export_onnx`."""
    restorer = model.load(model_dir, device="cpu")
    target = Path(out) if out is not None else default_out_dir(model_dir)
    if target.resolve() == resolve_model_dir(model_dir).resolve():
        raise ExportError("refusing to export into the model directory itself; use "
                          "MODEL_DIR/onnx or another --out")
    return export_onnx(restorer, target, tiles, opset, tolerance, progress=progress,
                       precisions=precisions)


# -- backends ------------------------------------------------------------------------------

Create = Callable[..., Backend]


@dataclass(frozen=True)
class FamilyBackends:
    """What a family runs on. ``names``: its backends (``auto`` aside); ``precisions``:
    whether the reduced precisions (bf16, fp16) apply, else float32 only; ``choose``:
    ``auto``'s pick, ``(restorer, precision) -> (name, why)``; ``create``: the backend
    ``name`` (one of ``names``), ``(name, restorer, model_dir, tile, cache, precision,
    tf32, max_batch)``."""

    names: tuple[str, ...]
    precisions: bool
    choose: Callable[[object, str], tuple[str, str]]
    create: Create


@functools.singledispatch
def family_backends(restorer) -> FamilyBackends:
    raise BackendUnavailable(f"no backends for a {type(restorer).__name__}")


def choose_backend(restorer, precision: str = "fp32") -> tuple[str, str]:
    """(backend name, why) for ``auto`` (each family's rule; measured speeds behind them
    are in docs/benchmarks.md, "CPU backends and precision")."""
    return family_backends(restorer).choose(restorer, precision)


def create_backend(name: str, restorer, model_dir: str | Path | None = None,
                   tile: Optional[int] = None, cache: Optional[Path] = None,
                   precision: str = "fp32", tf32: bool = False,
                   max_batch: Optional[int] = None) -> Backend:
    """The backend ``name`` (one of ``export.backends.BACKENDS``) for ``restorer``;
    ``auto`` logs what it picked and why. Raises ``BackendUnavailable`` saying what to
    install or use instead.

    precision (one of ``export.backends.PRECISIONS``; ``auto`` logs what it resolved
    to): what the torch-run networks use. With ``bf16`` the onnxruntime backend of a
    latent ResShift model decodes on torch bf16 (``SplitBackend``); its graphs stay
    float32. tf32: TF32 for float32 CUDA work, applied here for a CUDA restorer
    (``apply_tf32``). max_batch: the largest batch the caller will run (the TensorRT
    profiles' upper bound)."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    family = family_backends(restorer)
    if restorer.device.type == "cuda":
        log.info("TF32 %s for float32 CUDA work: %s", "on" if tf32 else "off",
                 ", ".join(f"{k}={v}" for k, v in apply_tf32(tf32).items()))
    asked = precision
    if not family.precisions and precision == "auto":
        # nothing to choose (and no bf16 timing to run at start-up)
        precision, why_precision = "fp32", f"{restorer.family} models run in fp32"
    else:
        precision, why_precision = resolve_precision(precision, restorer.device)
    if not family.precisions and precision != "fp32":
        raise BackendUnavailable(f"precision {asked} is for ResShift models; "
                                 f"{restorer.family} models run in fp32 "
                                 f"(--precision fp32)")
    if asked == "auto":
        log.info("precision auto -> %s: %s", precision, why_precision)
    if name == "auto":
        name, why = family.choose(restorer, precision)
        log.info("backend auto -> %s: %s", name, why)
        if name == "tensorrt":
            # engines that cannot be built or opened here must not stop an automatic
            # choice: say why once and go on with what runs without TensorRT
            try:
                return family.create(name, restorer, model_dir, tile, cache, precision,
                                     tf32, max_batch)
            except BackendUnavailable as exc:
                name = "torch" if precision == "fp16" else "onnxruntime"
                log.warning("backend auto: tensorrt failed (%s); using %s instead", exc, name)
    if name not in family.names:
        raise BackendUnavailable(f"{restorer.family} models run on the "
                                 f"{' or '.join(family.names)} backend(s) only "
                                 f"(--backend torch)")
    return family.create(name, restorer, model_dir, tile, cache, precision, tf32, max_batch)


# ResShift: torch, onnxruntime (float32 graphs; a graph failing its check runs on torch),
# TensorRT (fp16 engines).

def _choose_resshift(restorer: Restorer, precision: str) -> tuple[str, str]:
    """tensorrt when usable, else onnxruntime (with the CUDA provider when the restorer
    is on a GPU and onnxruntime has it), else torch. On the CPU onnxruntime float32 beat
    torch float32 eager, but for the VQGAN of latent models the torch modules in row
    bands beat onnxruntime (``model.nets.banded``): there ``split`` runs the UNet on
    onnxruntime and the autoencoder on torch (float32; where bf16 pays, the decoder in
    bf16, the fastest mix within 40 dB of float32)."""
    try:
        providers = ort_providers(restorer.device)
    except BackendUnavailable:
        providers = []
    has_onnx = importlib.util.find_spec("onnx") is not None
    if restorer.device.type != "cuda":
        if providers and has_onnx:
            if restorer.latent:
                decoder = "bf16" if precision.startswith("bf16") else "float32"
                return "split", (f"on the CPU the onnxruntime float32 UNet with the torch "
                                 f"autoencoder in row bands (float32 encoder, {decoder} "
                                 f"decoder) is the fastest mix within 40 dB of float32 "
                                 f"(measured)")
            return "onnxruntime", ("on the CPU onnxruntime float32 runs these models about "
                                   "1.5-2x faster than torch float32 (measured)")
        return "torch", f"on the CPU without onnxruntime and onnx ({ORT_INSTALL})"
    why_not_trt = unavailable_reason()
    if why_not_trt is None:
        return "tensorrt", "TensorRT and a CUDA GPU are available"
    if precision == "fp16":
        # the onnxruntime graphs are float32; torch's fp16 autocast uses tensor cores
        return "torch", (f"fp16 autocast on CUDA (onnxruntime graphs are float32); "
                         f"tensorrt: {why_not_trt}")
    if CUDA_EP in providers and has_onnx:
        return "onnxruntime", f"onnxruntime has the CUDA provider; tensorrt: {why_not_trt}"
    return "torch", f"tensorrt: {why_not_trt}; onnxruntime has no CUDA provider"


def _create_resshift(name: str, restorer: Restorer, model_dir, tile, cache, precision: str,
                     tf32: bool, max_batch: Optional[int]) -> Backend:
    if name == "torch":
        return TorchBackend(restorer, precision)
    if name in ("onnxruntime", "split"):
        ort = OnnxRuntimeBackend(restorer, model_dir, cache=cache, tf32=tf32)
        # a graph failing its export check runs on torch, logged once (export.fallback)
        ort = TorchFallback(ort, restorer, precision)
        if restorer.latent and (name == "split" or precision.startswith("bf16")):
            # auto's CPU mix; an explicit onnxruntime with bf16 decodes on torch bf16
            vae_precision = precision if name == "split" else "bf16"
            return SplitBackend(ort, TorchBackend(restorer, vae_precision))
        return ort
    engine_batch = {} if max_batch is None else {"max_batch": int(max_batch)}
    return TensorRTBackend(restorer, model_dir, tile, cache=cache, **engine_batch)


@family_backends.register
def _(restorer: Restorer) -> FamilyBackends:
    return RESSHIFT_BACKENDS


# "split" is auto's CPU choice for latent models (not a --backend value)
RESSHIFT_BACKENDS = FamilyBackends(("torch", "onnxruntime", "tensorrt", "split"), True,
                                   _choose_resshift, _create_resshift)


# DiffIR: torch, or its two float32 onnxruntime graphs.

def _create_diffir(name: str, restorer: DiffIRRestorer, model_dir, tile, cache,
                   precision: str, tf32: bool, max_batch: Optional[int]) -> Backend:
    if name == "torch":
        return TorchBackend(restorer, precision)
    return DiffIROnnxBackend(restorer, model_dir, cache=cache, tf32=tf32)


DIFFIR_BACKENDS = FamilyBackends(("torch", "onnxruntime"), False,
                                 lambda restorer, precision: choose_diffir_backend(restorer),
                                 _create_diffir)


@family_backends.register
def _(restorer: DiffIRRestorer) -> FamilyBackends:
    return DIFFIR_BACKENDS
