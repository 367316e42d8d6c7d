"""The ONNX contracts of a DiffIR S2 model: the whole forward, and the DIRformer alone.

=================  =====================================================  ===============
file               inputs -> outputs                                      dynamic axes
=================  =====================================================  ===============
diffir_s2          lq (B,3,h,w) in [0,1], noise (B,256) -> sr (B,3,sh,sw) batch, h, w
diffir_dirformer   lq (B,3,h,w) in [0,1], ipr (B,256) -> sr (B,3,sh,sw)   batch, h, w
=================  =====================================================  ===============

The graph is ``DiffIRRestorer.sample(lq, noise)`` after its padding step: CPEN_S2 on the
LQ, the T (4) posterior-mean steps of the IPR diffusion unrolled with their step index
and coefficients as constants, then the DIRformer; the output is not clamped. ``h`` and
``w`` must already be multiples of the model's ``input_multiple`` (8 for x4, 16 for x2,
32 for x1): reflect-pad on the right/bottom first (``model.restorer.pad_to_multiple``,
a shape-dependent Python loop that stays outside the graph) and crop the output to
``s`` x the unpadded size. ``noise`` is the one prior draw x_T ~ N(0, I).

The spatial axes stay dynamic: the transposed attention is over channels (its matrices
are C/heads square whatever the image size) and every reshape is traced from the input's
shape, so one graph serves every padded size; the export check runs a second batch and
size to prove it.

``diffir_s2`` is the whole-image forward. Tiled inputs (``model.diffir.tiling``) need the
DIRformer alone: their one IPR comes from CPEN over the whole image and one IPR loop,
then every tile runs ``diffir_dirformer`` with that IPR (``export.diffir_backend``).
"""

from __future__ import annotations

import torch
from torch import nn

from model.diffir.sampler import sample_ipr

from .errors import ExportError
from .graphs import GraphSpec, Inputs

GRAPH_NAME = "diffir_s2"
DIRFORMER_GRAPH = "diffir_dirformer"


class DiffIRForward(nn.Module):
    """``(lq, noise) -> sr`` of a ``DiffIRRestorer`` for padded inputs, as one module.

    lq (B, 3, h, w) in [0, 1], h and w multiples of ``input_multiple``; noise (B, 256)
    the prior draw x_T. Returns (B, 3, s*h, s*w), unclamped.
    """

    def __init__(self, restorer):
        super().__init__()
        self.network = restorer.network
        self.schedule = restorer.schedule

    def forward(self, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        condition = self.network.condition(lq)
        ipr = sample_ipr(self.network.denoise, condition, noise, self.schedule)
        return self.network.G(lq, ipr)


class DIRformerForward(nn.Module):
    """``(lq, ipr) -> sr``: the DIRformer of a ``DiffIRRestorer`` for padded tiles."""

    def __init__(self, restorer):
        super().__init__()
        self.G = restorer.network.G

    def forward(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        return self.G(lq, ipr)


def _spec(restorer, size: int, name: str, kind: str, module: nn.Module,
          second: str) -> GraphSpec:
    """A graph of inputs (lq, ``second``) -> sr: lq uniform in [0, 1], the second input
    (the prior draw or an IPR, both (B, 256)) ~ N(0, 1). The "alt" check shape is
    non-square: (size + m) x (2 * size) for the input multiple m."""
    m = int(restorer.input_multiple)
    if size <= 0 or size % m:
        raise ExportError(f"DiffIR export size {size} is not a positive multiple of {m} "
                          f"(the model's input multiple)")
    width = int(restorer.prior_shape(1)[1])

    def sample(batch: int, gen: torch.Generator, alt: bool = False) -> Inputs:
        h, w = (size + m, 2 * size) if alt else (size, size)
        return {"lq": torch.rand((batch, 3, h, w), generator=gen),
                second: torch.randn((batch, width), generator=gen)}

    return GraphSpec(
        name=name, kind=kind, module=module.eval(),
        input_names=["lq", second], output_names=["sr"],
        dynamic_axes={"lq": {0: "batch", 2: "height", 3: "width"},
                      second: {0: "batch"},
                      "sr": {0: "batch", 2: "out_height", 3: "out_width"}},
        sample=sample,
        info={"export_size": size, "input_multiple": m, "scale": int(restorer.scale),
              "steps": int(restorer.steps), "prior_width": width})


def dirformer_graph(restorer, size: int) -> GraphSpec:
    """The DIRformer alone, ``(lq, ipr) -> sr``, traced at ``size`` x ``size`` LQ pixels
    (a positive multiple of ``restorer.input_multiple``); batch, height, width dynamic."""
    return _spec(restorer, size, DIRFORMER_GRAPH, "diffir_dirformer", DIRformerForward(restorer),
                 "ipr")


def diffir_graph(restorer, size: int) -> GraphSpec:
    """The whole DiffIR S2 forward, ``(lq, noise) -> sr``, traced at a ``size`` x
    ``size`` LQ (a positive multiple of ``restorer.input_multiple``); batch, height and
    width dynamic."""
    return _spec(restorer, size, GRAPH_NAME, "diffir", DiffIRForward(restorer), "noise")
