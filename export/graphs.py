"""The ONNX contract of each exportable module, declared in one place.

A :class:`GraphSpec` names a graph's file, its inputs and outputs, which axes stay
dynamic, and how to draw random inputs of a given batch size / spatial size. The ONNX
writer and the onnxruntime check read nothing else; TensorRT profiles will be derived
from the same specs.

Graphs (float32 inputs and outputs, NCHW; ``.fp16.onnx`` twins compute in float16,
``export.fp16``):

=============  =====================================================  ==================
file           inputs -> outputs                                      dynamic axes
=============  =====================================================  ==================
unet_t{N}      x (B,C,N,N), t (B,) int64, lq (B,3,sN,sN)              batch
               [, mask (B,1,sN,sN)] -> x0 (B,C_out,N,N)
vae_encoder    image (B,3,H,W) in [-1,1] -> z (B,E,H/f,W/f)           batch, H, W
vae_decoder    z (B,E,h,w) -> image (B,3,f*h,f*w)                     batch, h, w
=============  =====================================================  ==================

``N`` is the latent tile side (the Swin shift mask is a function of the spatial size,
so each tile size is its own graph), ``s`` the UNet's ``lq_scale``, ``E`` the
autoencoder's ``embed_dim``, ``f`` its down-sampling factor. The encoder stops at
``quant_conv`` (no quantisation, as ``VQAutoencoder.encode``); the decoder starts with
the nearest-codebook lookup, then ``post_quant_conv`` and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .errors import ExportError
from .fp16 import graph_file

Inputs = dict[str, torch.Tensor]


@dataclass
class GraphSpec:
    """One exportable graph: module, names, dynamic axes and a random-input recipe.

    ``sample(batch, generator, alt)`` returns named inputs; ``alt=False`` gives the export
    shape, ``alt=True`` a second shape that differs in every dynamic axis, so the check
    proves those axes really are dynamic.
    """

    name: str                       # file stem, e.g. "unet_t64"
    kind: str                       # "unet" | "vae_encoder" | "vae_decoder"
    module: nn.Module               # forward(*inputs in input_names order)
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    sample: Callable[[int, torch.Generator, bool], Inputs]
    info: dict = field(default_factory=dict)   # extra manifest fields (tile, factor...)
    # the codebook the output is quantised with downstream (encoder graphs): the check
    # counts latent positions whose nearest code changed
    codebook: Optional[torch.Tensor] = None

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def file_for(self, precision: str = "fp32") -> str:
        """``unet_t64.onnx`` (fp32) or ``unet_t64.fp16.onnx`` (``export.fp16.graph_file``)."""
        return graph_file(self.name, precision)


class _UNetGraph(nn.Module):
    """``SwinUNet`` with positional inputs (x, t, lq[, mask]) for tracing."""

    def __init__(self, unet: nn.Module, with_mask: bool):
        super().__init__()
        self.unet, self.with_mask = unet, with_mask

    def forward(self, x, t, lq, mask: Optional[torch.Tensor] = None):
        return self.unet(x, t, lq=lq, mask=mask if self.with_mask else None)


class _Encoder(nn.Module):
    """``VQAutoencoder.encode``: ``quant_conv(encoder(image))``, no quantisation."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, image):
        return self.autoencoder.encode(image)


class _Decoder(nn.Module):
    """``VQAutoencoder.decode(z, quantize=True)``: codebook lookup, post_quant_conv, decoder."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, z):
        return self.autoencoder.decode(z, quantize=True)


def _uniform(shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * 2 - 1


def unet_graph(unet: nn.Module, tile: int, unit: int, max_t: int = 15,
               width: Optional[int] = None) -> GraphSpec:
    """The UNet at latent tile ``tile`` x ``width`` (default square; multiples of
    ``unit``), dynamic batch. Non-square graphs are named ``unet_t{tile}x{width}``.

    Random inputs: x ~ N(0, 1), t uniform in [0, max_t], lq uniform in [-1, 1],
    mask in {-1, 1}.
    """
    width = tile if width is None else int(width)
    for side in (tile, width):
        if side <= 0 or side % unit:
            raise ExportError(f"UNet tile {side} is not a positive multiple of {unit} (the "
                              f"Swin window at the coarsest level)")
    with_mask = bool(getattr(unet, "cond_mask", False))
    cond_lq = bool(getattr(unet, "cond_lq", True))
    if not cond_lq:
        raise ExportError("unconditioned UNets (cond_lq false) are not exported")
    s = int(unet.lq_scale)
    names = ["x", "t", "lq"] + (["mask"] if with_mask else [])

    def sample(batch: int, gen: torch.Generator, alt: bool = False) -> Inputs:
        h, w = tile, width
        out = {"x": torch.randn((batch, unet.in_channels, h, w), generator=gen),
               "t": torch.randint(0, max_t + 1, (batch,), generator=gen, dtype=torch.int64),
               "lq": _uniform((batch, 3, s * h, s * w), gen)}
        if with_mask:
            out["mask"] = torch.where(torch.rand((batch, 1, s * h, s * w), generator=gen) > 0.5,
                                      1.0, -1.0)
        return out

    return GraphSpec(
        name=f"unet_t{tile}" if width == tile else f"unet_t{tile}x{width}", kind="unet",
        module=_UNetGraph(unet, with_mask).eval(), input_names=names, output_names=["x0"],
        dynamic_axes={k: {0: "batch"} for k in names + ["x0"]}, sample=sample,
        info={"tile": tile, "lq_tile": s * tile,
              **({} if width == tile else {"tile_w": width, "lq_tile_w": s * width})})


def encoder_graph(autoencoder: nn.Module, latent_size: int) -> GraphSpec:
    """VQGAN encoder up to ``quant_conv``; exported at ``latent_size * f`` pixels,
    batch, height and width dynamic (multiples of f)."""
    f = int(autoencoder.downsample_factor)

    def sample(batch: int, gen: torch.Generator, alt: bool = False) -> Inputs:
        h, w = _sizes(latent_size, alt)
        return {"image": _uniform((batch, 3, h * f, w * f), gen)}

    return GraphSpec(
        name="vae_encoder", kind="vae_encoder", module=_Encoder(autoencoder).eval(),
        input_names=["image"], output_names=["z"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                      "z": {0: "batch", 2: "latent_height", 3: "latent_width"}},
        sample=sample, info={"factor": f, "export_size": latent_size * f},
        codebook=autoencoder.quantize.embedding.weight.detach().float())


def decoder_graph(autoencoder: nn.Module, latent_size: int) -> GraphSpec:
    """Codebook lookup + ``post_quant_conv`` + decoder; batch and size dynamic.

    Random latents are codebook vectors plus noise of 10% of the codebook's spread, so
    the nearest code is never a near tie that float rounding could flip (a flip is a
    legitimate difference of the two runtimes, not an export error).
    """
    f = int(autoencoder.downsample_factor)
    codes = autoencoder.quantize.embedding.weight.detach().float()

    def sample(batch: int, gen: torch.Generator, alt: bool = False) -> Inputs:
        h, w = _sizes(latent_size, alt)
        idx = torch.randint(0, codes.shape[0], (batch, h, w), generator=gen)
        z = codes[idx].permute(0, 3, 1, 2)
        noise = torch.randn(z.shape, generator=gen) * 0.1 * float(codes.std())
        return {"z": (z + noise).contiguous()}

    return GraphSpec(
        name="vae_decoder", kind="vae_decoder", module=_Decoder(autoencoder).eval(),
        input_names=["z"], output_names=["image"],
        dynamic_axes={"z": {0: "batch", 2: "latent_height", 3: "latent_width"},
                      "image": {0: "batch", 2: "height", 3: "width"}},
        sample=sample, info={"factor": f, "export_size": latent_size})


def _sizes(n: int, alt: bool) -> tuple[int, int]:
    """(h, w) latent size of the export shape, or a different non-square one."""
    if not alt:
        return n, n
    return max(1, n // 2), max(1, (3 * n) // 4)
