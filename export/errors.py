"""Typed errors of the export layer (ONNX graphs now, TensorRT engines later)."""

from __future__ import annotations

from model.errors import ModelError


class ExportError(ModelError):
    """A model cannot be exported: unsupported setting, tile size, opset or layout."""


class ExportCheckError(ExportError):
    """A written graph does not reproduce the torch model it was exported from.

    ``graph``: file name; ``rel_err``: ||onnx - torch|| / ||torch|| measured in float32
    on random inputs of ``shapes``; ``tolerance``: the bound it had to stay under.
    """

    def __init__(self, graph: str, rel_err: float, tolerance: float,
                 shapes: dict[str, tuple[int, ...]]):
        self.graph, self.rel_err, self.tolerance = graph, rel_err, tolerance
        self.shapes = dict(shapes)
        inputs = ", ".join(f"{k}{list(v)}" for k, v in self.shapes.items())
        super().__init__(f"{graph}: onnxruntime output differs from the torch model: relative "
                         f"error {rel_err:.3e} >= tolerance {tolerance:.0e} (inputs {inputs})")


class BackendUnavailable(ExportError):
    """A runtime backend cannot run here: a package, a GPU or an implemented step is
    missing. The message says what is missing and what to install; the CLI prints it
    as one line and exits 2."""
