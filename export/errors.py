"""Typed errors of the export layer (ONNX graphs now, TensorRT engines later)."""

from __future__ import annotations

from model.errors import ModelError


class ExportError(ModelError):
    """A model cannot be exported: unsupported setting, tile size, opset or layout."""


class ExportCheckError(ExportError):
    """A written graph does not reproduce the torch model it was exported from.

    ``graph``: file name; ``rel_err``: ||onnx - torch|| / ||torch|| measured in float32
    on random inputs of ``shapes``; ``tolerance``: the bound the failed measure had to
    keep. ``measure``: which one failed, "rel_err" or one of ``export.fidelity``'s
    (``psnr_db``, a lower bound; ``code_flips``, an upper bound); ``value``: its
    measured value.
    """

    def __init__(self, graph: str, rel_err: float, tolerance: float,
                 shapes: dict[str, tuple[int, ...]], measure: str = "rel_err",
                 value: float | None = None):
        self.graph, self.rel_err, self.tolerance = graph, rel_err, tolerance
        self.measure = measure
        self.value = rel_err if value is None else value
        self.shapes = dict(shapes)
        inputs = ", ".join(f"{k}{list(v)}" for k, v in self.shapes.items())
        if measure == "rel_err":
            detail = f"relative error {rel_err:.3e} >= tolerance {tolerance:.0e}"
        elif measure == "psnr_db":
            detail = (f"PSNR {self.value:.2f} dB < limit {tolerance:g} dB (relative error "
                      f"{rel_err:.3e})")
        else:
            detail = (f"{measure} {self.value:.4g} > limit {tolerance:g} (relative error "
                      f"{rel_err:.3e})")
        super().__init__(f"{graph}: onnxruntime output differs from the torch model: "
                         f"{detail} (inputs {inputs})")


class BackendUnavailable(ExportError):
    """A runtime backend cannot run here: a package, a GPU or an implemented step is
    missing. The message says what is missing and what to install; the CLI prints it
    as one line and exits 2."""
