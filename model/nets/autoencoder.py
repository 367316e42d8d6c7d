"""VQGAN autoencoder used by ResShift for latent-space restoration.

An independent implementation of the VQ-regularised autoencoder that ResShift's
checkpoints (``autoencoder_vq_f4.pth``, ``celeba256_vq_f4_dim3_face.pth``,
``ffhq512_vq_f8_dim8_face.pth``) were trained with. The module tree is laid out so that ``state_dict()``
has exactly the keys, order and shapes of the official files, so they load with
``load_state_dict(..., strict=True)`` (see :func:`clean_state_dict` for DDP prefixes
and ``{"state_dict": ...}`` wrappers).

Data flow (f = ``2 ** (len(ch_mult) - 1)``, the spatial down-sampling factor)::

    image  B x 3 x H x W, RGB in [-1, 1]
      -> encoder -> quant_conv                  encode(x):  B x embed_dim x H/f x W/f
    latent B x embed_dim x H/f x W/f             (unbounded floats, no quantisation)
      -> nearest codebook vector                quantize(z): same shape
      -> post_quant_conv -> decoder             decode(z):  B x out_ch x H x W
    image  roughly in [-1, 1], not clamped

Architecture facts that the numbers depend on: every normalisation is
``GroupNorm(32, C, eps=1e-6)`` with affine parameters; the non-linearity is swish
(``x * sigmoid(x)``); down-sampling is a stride-2 3x3 convolution after padding one
zero row/column on the bottom/right only; up-sampling is nearest-neighbour x2
followed by a 3x3 convolution; each decoder level has one more residual block than
the matching encoder level; the encoder and the decoder each have a single-head
self-attention block over the whole latent in their middle. The quantiser picks,
per latent position, the codebook row with the smallest squared L2 distance.

Memory for large images
-----------------------
The middle attention is global: a 2048 px output has a 512 x 512 latent, i.e. 262k
tokens, and an explicit n x n attention matrix would need hundreds of GB. It is
computed with :func:`torch.nn.functional.scaled_dot_product_attention`, which uses
flash / memory-efficient kernels (CUDA, CPU) and never stores the matrix. Setting
``attn_query_chunk`` (on the autoencoder, or ``query_chunk`` on an
:class:`AttnBlock`) additionally splits the queries into chunks, which bounds memory
even on a backend that falls back to the plain math kernel. Likewise the codebook
search processes latent positions in row chunks of at most ``quantize_chunk_elems``
distance entries (default 2**26, i.e. 256 MB of float32) instead of materialising the
full positions x n_embed matrix.

GroupNorm statistics override (for tiled encode / decode)
---------------------------------------------------------
Running the encoder or decoder tile by tile changes every GroupNorm: each tile is
normalised with its own mean/variance, which shows up as colour/brightness seams.
All GroupNorms here are :class:`StatGroupNorm` modules whose statistics can be
recorded and overridden through a context manager:

``ae.groupnorm_stats(mode, stats=None, *, into=None, reduce_batch=False, core=None)``

* ``mode="record"``: every GroupNorm normalises its input as usual (output is
  bit-identical to the plain path) and adds the per-(batch, group) count, sum and
  sum of squares of its input to a :class:`GroupNormStats` (``stats``, or a new one),
  keyed by the module's qualified name (``"decoder.mid.block_1.norm1"``). Passing the
  same object to several contexts (or calling the model several times inside one)
  accumulates, so a first pass over all tiles gives image-wide statistics.
* ``mode="use"``: every GroupNorm normalises with the mean/variance held in
  ``stats`` instead of its input's. Statistics with batch size 1 broadcast over any
  batch (e.g. all tiles of one image in one batch).
* ``mode="refine"``: normalise with ``stats`` and record the statistics seen into
  ``into`` (a new object if None).
* ``reduce_batch=True`` sums the recorded moments over the batch (shape 1 x G):
  use it when a batch holds tiles of one image.
* ``core=(top, bottom, left, right)``, fractions of the input height/width: only
  that window of each activation map counts when recording. With overlapping tiles,
  give each tile its share of a partition of the image (e.g. its area up to the
  middle of every overlap) so no pixel is counted twice. The fractions are mapped to
  ``round(fraction * size)`` at every resolution; they are exact when tile offsets
  and sizes are multiples of the total scale factor.

What is exact and what is not: a tile pass in ``record`` mode normalises each tile
with its own statistics, so only the first GroupNorm's aggregated statistics are
image-wide (given tiles with a halo of at least one pixel and ``core`` set to their
share of the image); deeper layers see tile-normalised activations. A ``refine`` pass
fed with exact statistics of layers 1..k records exact statistics up to layer k+1,
provided the halo covers the receptive field (and only up to the global middle
attention, which no tiling reproduces). Iterating ``refine`` from approximate
statistics is NOT guaranteed to converge (with random weights it diverges), so
prefer a single ``record`` pass, or recording on a down-scaled whole image, and
judge the result on real images.

The context yields the statistics object being recorded into (``stats`` for "use").
Outside any context the forward pass is a plain ``F.group_norm`` (fast, ONNX
exportable). Example of a two-pass tiled decode::

    acc = GroupNormStats()
    for tile in tiles:                                  # pass 1: gather statistics
        with ae.groupnorm_stats("record", acc, core=tile.core):
            ae.decode(tile.z)
    with ae.groupnorm_stats("use", acc):                # pass 2: shared statistics
        outs = [ae.decode(tile.z) for tile in tiles]

The same mechanism works for any module containing :class:`StatGroupNorm` layers via
the free function :func:`groupnorm_stats`.

Configuration
-------------
``VQAutoencoder(embed_dim, n_embed, ddconfig, **unused)`` takes the official
``autoencoder.params``; training-only extras (``lossconfig``, ``ckpt_path``,
``remap``, ``sane_index_shape``, ``monitor``, ...) are accepted and ignored. ddconfig
keys: ``double_z``, ``z_channels``, ``resolution``, ``in_channels``, ``out_ch``,
``ch``, ``ch_mult``, ``num_res_blocks`` (int or one int per level),
``attn_resolutions``, ``dropout``, ``padding_mode`` (padding of the stride-1 3x3
convolutions; the down-sampling pad stays zero. Every released config uses
``"zeros"``, the only value the reference vectors cover), ``resamp_with_conv``
(default True), ``tanh_out`` (default False); other keys are ignored.

Everything in the forward pass is free of data-dependent Python control flow, so
``torch.onnx`` / ``torch.jit.trace`` can trace it (the codebook search is done in a
single chunk while tracing or exporting).

Inside ``VQAutoencoder.banded()`` the encoder and decoder compute the same forward
over the whole image layer by layer in row bands (``model.nets.banded``): bounded
temporaries for large images, exact GroupNorm statistics. It is for inference:
with gradients enabled, and for tracing and export, the plain forward runs.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GN_GROUPS",
    "GN_EPS",
    "GroupNormStats",
    "StatGroupNorm",
    "groupnorm_stats",
    "ResnetBlock",
    "AttnBlock",
    "Downsample",
    "Upsample",
    "Encoder",
    "Decoder",
    "VectorQuantizer",
    "VQAutoencoder",
    "clean_state_dict",
]

from . import banded as _banded
from .groupnorm_stats import (GN_EPS, GN_GROUPS, GroupNormStats, StatGroupNorm,
                              groupnorm_stats)


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x), elementwise."""
    return x * torch.sigmoid(x)


def _in_export() -> bool:
    """True while tracing, scripting, exporting or compiling (keep the graph simple)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------


def _conv3x3(cin: int, cout: int, padding_mode: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, padding_mode=padding_mode)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GN, swish, conv3x3) x 2, plus a 1x1 skip projection.

    Input ``B x in_ch x H x W``, output ``B x out_ch x H x W``. The skip path is the
    identity when the channel count is unchanged, else ``nin_shortcut`` (1x1 conv).
    """

    def __init__(self, in_ch: int, out_ch: Optional[int] = None, dropout: float = 0.0,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.norm1 = StatGroupNorm(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch, padding_mode)
        self.norm2 = StatGroupNorm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_ch, out_ch, padding_mode)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual connection.

    Input/output ``B x C x H x W``. Queries, keys and values are 1x1 convolutions of
    the group-normalised input; attention weights are softmax(q k^T / sqrt(C)).
    Computed with ``F.scaled_dot_product_attention`` (no n x n matrix is kept);
    ``query_chunk`` (positions per call, None = all) bounds memory further.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = StatGroupNorm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.query_chunk: Optional[int] = None

    @staticmethod
    def _tokens(t: Tensor) -> Tensor:
        # B x C x H x W  ->  B x 1 x (H*W) x C  (one attention head). Contiguous on
        # purpose: the flash / memory-efficient kernels need a unit stride on the last
        # dimension, otherwise SDPA silently falls back to the n x n math kernel.
        return t.flatten(2).transpose(1, 2).contiguous().unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self._tokens(self.q(h)), self._tokens(self.k(h)), self._tokens(self.v(h))
        chunk = self.query_chunk
        n = q.shape[2]
        if chunk is None or _in_export() or n <= chunk:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.cat(
                [F.scaled_dot_product_attention(q[:, :, s:s + chunk], k, v) for s in range(0, n, chunk)],
                dim=2,
            )
        out = out.squeeze(1).transpose(1, 2).reshape(h.shape)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: pad one zero row/column at bottom/right, then 3x3 stride-2 conv.

    ``with_conv=False`` uses 2x2 average pooling instead (no parameters).
    Input ``B x C x H x W`` (H, W even), output ``B x C x H/2 x W/2``.
    """

    def __init__(self, channels: int, with_conv: bool = True) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Double H and W with nearest-neighbour interpolation, then a 3x3 conv.

    Input ``B x C x H x W``, output ``B x C x 2H x 2W``.
    """

    def __init__(self, channels: int, with_conv: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = _conv3x3(channels, channels, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class _Level(nn.Module):
    """One resolution level: ``block`` (residual blocks), ``attn`` (optional, one per
    block) and a ``downsample`` / ``upsample`` attribute added by the owner."""

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: Tensor) -> Tensor:
        use_attn = len(self.attn) > 0
        for i, blk in enumerate(self.block):
            h = blk(h)
            if use_attn:
                h = self.attn[i](h)
        return h


class _Middle(nn.Module):
    """Residual block, global self-attention, residual block (same shape in and out)."""

    def __init__(self, channels: int, dropout: float, padding_mode: str) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, padding_mode)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout, padding_mode)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


def _per_level(num_res_blocks: Union[int, Sequence[int]], levels: int) -> list[int]:
    if isinstance(num_res_blocks, int):
        return [num_res_blocks] * levels
    counts = [int(n) for n in num_res_blocks]
    if len(counts) != levels:
        raise ValueError(f"num_res_blocks has {len(counts)} entries for {levels} levels (ch_mult)")
    return counts


class Encoder(nn.Module):
    """Image ``B x in_channels x H x W`` -> features ``B x z' x H/f x W/f``.

    ``z' = 2 * z_channels`` if ``double_z`` else ``z_channels``; ``f = 2**(len(ch_mult)-1)``.
    Level i has ``num_res_blocks[i]`` residual blocks of width ``ch * ch_mult[i]``
    and, except for the last level, a Downsample.
    """

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: Union[int, Sequence[int]],
                 attn_resolutions: Sequence[int] = (), dropout: float = 0.0, in_channels: int = 3,
                 resolution: int = 256, z_channels: int = 3, double_z: bool = False,
                 padding_mode: str = "zeros", resamp_with_conv: bool = True) -> None:
        super().__init__()
        levels = len(ch_mult)
        self.num_res_blocks = _per_level(num_res_blocks, levels)
        self.conv_in = _conv3x3(in_channels, ch, padding_mode)
        widths_in = [ch] + [ch * m for m in ch_mult[:-1]]
        res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(ch_mult):
            block_in = widths_in[i]
            block_out = ch * mult
            blocks, attns = [], []
            for _ in range(self.num_res_blocks[i]):
                blocks.append(ResnetBlock(block_in, block_out, dropout, padding_mode))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != levels - 1:
                level.downsample = Downsample(block_in, resamp_with_conv)
                res //= 2
            self.down.append(level)
        self.mid = _Middle(block_in, dropout, padding_mode)
        self.norm_out = StatGroupNorm(block_in)
        self.conv_out = _conv3x3(block_in, 2 * z_channels if double_z else z_channels, padding_mode)

    # Elements per band while ``VQAutoencoder.banded`` is active (None: the plain
    # forward), and the attention window of that pass (None: global).
    band_elems: Optional[int] = None
    band_window: Optional[int] = None

    def forward(self, x: Tensor) -> Tensor:
        # banded unless exporting, recording gradients (bands write in place), or while
        # GroupNorm statistics hooks are set (the tiled pass records / imposes
        # statistics through the modules' own GroupNorms)
        if self.band_elems is not None and self.norm_out._stats_ctl is None \
                and not torch.is_grad_enabled() and not _in_export():
            return _banded.encoder_forward(self, x, self.band_elems, self.band_window)
        h = self.conv_in(x)
        last = len(self.down) - 1
        for i, level in enumerate(self.down):
            h = level.run_blocks(h)
            if i != last:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``B x z_channels x h x w`` -> image ``B x out_ch x f*h x f*w``.

    Mirror of :class:`Encoder`, walked from the coarsest level: level i has
    ``num_res_blocks[i] + 1`` residual blocks of width ``ch * ch_mult[i]`` and, except
    for level 0, an Upsample. Levels are stored at index i in ``up`` (coarsest last).
    """

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int],
                 num_res_blocks: Union[int, Sequence[int]], attn_resolutions: Sequence[int] = (),
                 dropout: float = 0.0, resolution: int = 256, z_channels: int = 3,
                 padding_mode: str = "zeros", resamp_with_conv: bool = True,
                 tanh_out: bool = False) -> None:
        super().__init__()
        levels = len(ch_mult)
        self.num_res_blocks = _per_level(num_res_blocks, levels)
        self.tanh_out = tanh_out
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (levels - 1)
        self.conv_in = _conv3x3(z_channels, block_in, padding_mode)
        self.mid = _Middle(block_in, dropout, padding_mode)
        stages: list[Optional[_Level]] = [None] * levels
        for i in reversed(range(levels)):
            block_out = ch * ch_mult[i]
            blocks, attns = [], []
            for _ in range(self.num_res_blocks[i] + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout, padding_mode))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            level = _Level(blocks, attns)
            if i != 0:
                level.upsample = Upsample(block_in, resamp_with_conv, padding_mode)
                res *= 2
            stages[i] = level
        self.up = nn.ModuleList(stages)
        self.norm_out = StatGroupNorm(block_in)
        self.conv_out = _conv3x3(block_in, out_ch, padding_mode)

    band_elems: Optional[int] = None        # see Encoder.band_elems
    band_window: Optional[int] = None

    def forward(self, z: Tensor) -> Tensor:
        if self.band_elems is not None and self.norm_out._stats_ctl is None \
                and not torch.is_grad_enabled() and not _in_export():   # see Encoder
            return _banded.decoder_forward(self, z, self.band_elems, self.band_window)
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            h = level.run_blocks(h)
            if i != 0:
                h = level.upsample(h)
        h = self.conv_out(swish(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup (``embedding.weight``: ``n_embed x embed_dim``).

    ``forward(z)`` maps ``B x embed_dim x H x W`` to the same shape with every
    position replaced by the codebook row of smallest squared L2 distance (computed
    in float32 as ``|z|^2 + |e|^2 - 2 z.e``). Positions are processed in chunks of at
    most ``chunk_elems`` distance entries, so memory stays bounded for huge latents.
    """

    def __init__(self, n_embed: int, embed_dim: int, chunk_elems: int = 1 << 26) -> None:
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.chunk_elems = chunk_elems
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def indices(self, z: Tensor) -> Tensor:
        """Codebook index per position: int64 ``B x H x W``."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codes = self.embedding.weight.float()
        code_sq = codes.pow(2).sum(dim=1)
        rows = flat.shape[0]
        step = max(1, self.chunk_elems // max(1, self.n_embed))
        if _in_export() or rows <= step:
            idx = self._argmin(flat, codes, code_sq)
        else:
            idx = torch.cat([self._argmin(flat[s:s + step], codes, code_sq) for s in range(0, rows, step)])
        return idx.reshape(b, h, w)

    @staticmethod
    def _argmin(flat: Tensor, codes: Tensor, code_sq: Tensor) -> Tensor:
        # |e|^2 - 2 z.e in one fused op, then + |z|^2 in place: one rows x n_embed buffer.
        dist = torch.addmm(code_sq, flat, codes.t(), beta=1.0, alpha=-2.0)
        dist = dist.add_(flat.pow(2).sum(dim=1, keepdim=True))
        return dist.argmin(dim=1)

    def lookup(self, idx: Tensor) -> Tensor:
        """Codebook vectors for ``B x H x W`` indices: ``B x embed_dim x H x W``."""
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: Tensor) -> Tensor:
        return self.lookup(self.indices(z)).to(z.dtype)


# ---------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------


_DDCONFIG_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                  "num_res_blocks", "attn_resolutions", "dropout", "padding_mode", "resamp_with_conv",
                  "tanh_out")


class VQAutoencoder(nn.Module):
    """ResShift's VQ autoencoder; state dict layout identical to the official files.

    Args:
        embed_dim: latent / codebook vector size (3 for f4 models, 8 for the f8 face model).
        n_embed: codebook size (8192 / 4096).
        ddconfig: encoder/decoder hyper-parameters with the official names (see module docs).
        quantize_chunk_elems: max distance entries per codebook-search chunk.
        attn_query_chunk: optional query chunk for the two middle attentions.
        **unused: other official ``params`` (lossconfig, ckpt_path, remap, ...) are ignored.
    """

    def __init__(self, embed_dim: int, n_embed: int, ddconfig: Mapping, *,
                 quantize_chunk_elems: int = 1 << 26, attn_query_chunk: Optional[int] = None,
                 **unused) -> None:
        super().__init__()
        cfg = {k: ddconfig[k] for k in _DDCONFIG_KEYS if k in ddconfig}
        self.embed_dim = int(embed_dim)
        self.n_embed = int(n_embed)
        self.z_channels = int(cfg["z_channels"])
        self.ch_mult = tuple(int(m) for m in cfg["ch_mult"])
        common = dict(
            ch=int(cfg["ch"]),
            ch_mult=self.ch_mult,
            num_res_blocks=cfg["num_res_blocks"],
            attn_resolutions=tuple(cfg.get("attn_resolutions", ()) or ()),
            dropout=float(cfg.get("dropout", 0.0)),
            resolution=int(cfg.get("resolution", 256)),
            z_channels=self.z_channels,
            padding_mode=str(cfg.get("padding_mode", "zeros")),
            resamp_with_conv=bool(cfg.get("resamp_with_conv", True)),
        )
        # Official module order (encoder, decoder, quantize, quant_conv, post_quant_conv)
        # fixes the state-dict key order.
        self.encoder = Encoder(in_channels=int(cfg.get("in_channels", 3)),
                               double_z=bool(cfg.get("double_z", False)), **common)
        self.decoder = Decoder(out_ch=int(cfg.get("out_ch", 3)),
                               tanh_out=bool(cfg.get("tanh_out", False)), **common)
        self.quantize = VectorQuantizer(self.n_embed, self.embed_dim, chunk_elems=quantize_chunk_elems)
        # Mirrors the official layout: takes z_channels inputs even if double_z is set
        # (no released config sets it).
        self.quant_conv = nn.Conv2d(self.z_channels, self.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(self.embed_dim, self.z_channels, kernel_size=1)
        self.attn_query_chunk = attn_query_chunk
        # whether ``banded()`` can run (zero-padded convolutions; fixed at construction)
        self.bandable = _banded.supported(self)

    # -- configuration helpers ---------------------------------------------
    @property
    def downsample_factor(self) -> int:
        """Spatial factor between image and latent (4 for f4, 8 for f8)."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def attn_query_chunk(self) -> Optional[int]:
        return self.encoder.mid.attn_1.query_chunk

    @attn_query_chunk.setter
    def attn_query_chunk(self, value: Optional[int]) -> None:
        for m in self.modules():
            if isinstance(m, AttnBlock):
                m.query_chunk = None if value is None else int(value)

    # -- main API -----------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Image ``B x 3 x H x W`` in [-1, 1] -> latent ``B x embed_dim x H/f x W/f``.

        The latent is taken before quantisation (``quant_conv(encoder(x))``). H and W
        should be multiples of f.
        """
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """Latent ``B x embed_dim x h x w`` -> image ``B x out_ch x f*h x f*w``.

        With ``quantize`` (default, as the official sampler does) each latent vector is
        first replaced by its nearest codebook vector. Output is not clamped.
        """
        if quantize:
            z = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, quantize: bool = True) -> Tensor:
        """``decode(encode(x))``: reconstruction of ``x`` (same shape)."""
        return self.decode(self.encode(x), quantize=quantize)

    @contextlib.contextmanager
    def banded(self, band_elems: int = _banded.BAND_ELEMS,
               attn_window: Optional[int] = None) -> Iterator[None]:
        """Run ``encode`` / ``decode`` (and the encoder and decoder modules) on the whole
        image but band by band (``model.nets.banded``): the modules' exact result in one
        pass, with about ``banded_peak_bytes`` of full-size activations alive.
        ``attn_window`` (latent positions per side): attention of larger latents is
        local to windows of that side instead of global (see ``banded.attn_block``).

        Inside an active ``banded()`` this does nothing: the outer pass's settings stay
        (the restorer's large-image pass around a backend that bands its own calls)."""
        if not self.bandable:
            raise ValueError("banded passes need zero-padded convolutions (padding_mode "
                             "'zeros', as in every released config)")
        if self.encoder.band_elems is not None:
            yield
            return
        mods = (self.encoder, self.decoder)
        saved = [(m.band_elems, m.band_window) for m in mods]
        for m in mods:
            m.band_elems = int(band_elems)
            m.band_window = None if attn_window is None else int(attn_window)
        try:
            yield
        finally:
            for m, (e, w) in zip(mods, saved):
                m.band_elems, m.band_window = e, w

    def banded_peak_bytes(self, kind: str, height: int, width: int, itemsize: int = 4,
                          batch: int = 1) -> int:
        """Full-size activations a banded ``kind`` ("encode" / "decode") pass over a
        ``height x width`` image keeps at once, in bytes (``model.nets.banded.peak_bytes``)."""
        return _banded.peak_bytes(self, kind, height, width, itemsize, batch)

    def groupnorm_stats(self, mode: str = "record", stats: Optional[GroupNormStats] = None, *,
                        into: Optional[GroupNormStats] = None, reduce_batch: bool = False,
                        core: Optional[Sequence[float]] = None):
        """Context manager recording/overriding GroupNorm statistics; see module docs
        and :func:`groupnorm_stats`. Layer names are relative to this autoencoder
        (``"encoder.…"`` / ``"decoder.…"``)."""
        return groupnorm_stats(self, mode, stats, into=into, reduce_batch=reduce_batch, core=core)


def clean_state_dict(state: Mapping[str, object]) -> Dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and strip ``module.`` prefixes."""
    for key in ("state_dict", "model"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
            state = inner
            break
    out: Dict[str, Tensor] = {}
    for k, v in state.items():
        name = k[len("module."):] if k.startswith("module.") else k
        out[name] = v  # type: ignore[assignment]
    return out
