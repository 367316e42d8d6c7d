"""Whole-image VQGAN passes computed in row bands: exact, one pass, bounded temporaries.

Why this exists: a plain eager forward over a large image keeps several full-size
activations alive at once (a block's input, its normalised and activated copy, the
convolution output, the sum), which at 1024x1024 output is several GB. Tiles bound
memory, but every tile then needs image-wide GroupNorm statistics (a second pass over
all tiles, ``model.restorer``) and no tiling reproduces the global middle attention.

Here every layer still sees the whole image, so each GroupNorm's statistics are
exactly the module's; only the work is cut into row bands. A 3x3 convolution of rows
[r0, r1) reads rows [r0-1, r1+1) of its input, so each band normalises and activates
just those rows (two halo rows of cheap element-wise work), convolves them and writes
its rows of the output, adding the band's sums to the output's GroupNorm moments
(:class:`Moments`) while it is in cache, so the next layer needs no statistics pass.
What stays alive is a block's input and its intermediate (and its output when the
width grows; otherwise the output overwrites the input, :func:`resnet_block`); the band
temporaries are a few MB. The FLOPs are the module's, less those of the upsampling
convolutions (:func:`_phase_kernels`): nothing is computed twice but the halo rows'
normalisation. Outputs keep the input's memory
format (channels-last for the bf16 decoder).

The middle attention is global, as in the module, up to ``window`` positions a side;
larger maps attend locally (:func:`attn_block`), since global attention's cost per
pixel grows with the image.

Numerics: the same operations as the modules, in the same dtypes (GroupNorm and swish
in float32, convolutions in whatever autocast gives them); only the GroupNorm
statistics are summed in another order, so float32 results match the module's to
about 1e-6 relative (tests/model/nets/test_banded.py).

Entry points: ``Encoder.forward`` / ``Decoder.forward`` call :func:`encoder_forward` /
:func:`decoder_forward` inside ``VQAutoencoder.banded()``; :func:`peak_bytes` estimates
the largest set of full-size tensors a banded pass keeps, which is what the restorer
compares with its memory budget before choosing it over tiles.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Elements per band temporary (about 8 MB of float32): small enough for the caches,
# large enough that each convolution call has rows to work on.
BAND_ELEMS = 1 << 21


def band_rows(channels: int, width: int, elems: int = BAND_ELEMS) -> int:
    """Rows per band so that one band of a ``channels x width`` map holds ~``elems``."""
    return max(1, elems // max(1, channels * width))


def _bands(height: int, rows: int):
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def supported(module: nn.Module) -> bool:
    """Banded passes reproduce zero-padded convolutions only (every released config)."""
    return all(m.padding_mode == "zeros" for m in module.modules() if isinstance(m, nn.Conv2d))


# -- pieces ----------------------------------------------------------------------------
def _mean_var(gn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(batch, group) mean and variance of a whole ``x``, for a map that came
    without its moments (a convolution-free resampling layer, which no released config
    has)."""
    count, total, total_sq = gn.moments(x)
    mean = total / count
    return mean.float(), (total_sq / count - mean * mean).clamp_min(0.0).float()


def _terms(gn, stats, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``gn``'s float32 ``(centre, scale, shift)`` for ``x`` from its moments ``stats``
    (computed here when None), once per layer for all its bands."""
    mean, var = stats or _mean_var(gn, x)
    return gn.affine_terms(mean, var, x.device)


def _activated_rows(terms, x: Tensor, a: int, b: int) -> Tensor:
    """swish(GroupNorm(x)) for rows [a, b) of ``x``, in float32 (as autocast runs both),
    with the layer's :func:`_terms`: the module's subtract-then-scale normalisation
    (``normalize_with``) and swish, on a fresh band so that they can run in place."""
    centre, scale, shift = terms
    rows = x[:, :, a:b]
    if rows.dtype == torch.float32:
        t = rows - centre
        torch.addcmul(shift, t, scale, out=t)
    else:
        # half-precision input: one pass from it to the float32 result, scaling first
        # (x * scale + (bias - mean * scale)); the float32 rounding this adds is far
        # below the input's own (2^-8 relative for bfloat16)
        t = torch.addcmul(shift - centre * scale, rows, scale)
    return F.silu(t, inplace=True)


def _halo(r0: int, r1: int, height: int) -> tuple[int, int, int, int]:
    """Input rows [a, b) for output rows [r0, r1) of a 3x3 conv, and the zero rows the
    image border needs on top and bottom."""
    a, b = max(0, r0 - 1), min(height, r1 + 1)
    return a, b, int(r0 == 0), int(r1 == height)


class Moments:
    """Per-(batch, group) GroupNorm moments of a tensor, gathered band by band as it is
    written. Reading the finished tensor again for its statistics costs a full pass
    over memory (and for half-precision tensors a float32 copy of each group), while a
    band that was just written is still in cache.

    Each band gives its sum and sum of squares (float32 reductions: two fast passes,
    no temporaries; ``torch.var_mean`` is several times slower on CPU), added up in
    float64; the variance is ``E[x^2] - E[x]^2`` in float64. Its float32 sums lose
    about ``1e-7 * (1 + mean^2 / var)`` of the variance, far below what a float32
    convolution's rounding already changes for the activations of these networks."""

    def __init__(self, groups: int):
        self.groups = groups
        self.n = 0
        self.total: Optional[Tensor] = None
        self.total_sq: Optional[Tensor] = None

    def add(self, value: Tensor) -> None:
        b = value.shape[0]
        v = value.reshape(b, self.groups, -1)
        if v.dtype != torch.float32:
            v = v.float()
        s, s2 = v.sum(-1).double(), torch.linalg.vecdot(v, v).double()
        self.n += v.shape[-1]
        if self.total is None:
            self.total, self.total_sq = s, s2
        else:
            self.total, self.total_sq = self.total + s, self.total_sq + s2

    def mean_var(self) -> tuple[Tensor, Tensor]:
        mean = self.total / self.n
        var = (self.total_sq / self.n - mean * mean).clamp_min(0.0)
        return mean.float(), var.float()


class _Out:
    """A full-size output allocated on the first band (whose dtype autocast decides),
    with the GroupNorm moments of what was written when ``groups`` is given."""

    def __init__(self, like: Tensor, channels: int, height: int, width: int,
                 into: Optional[Tensor] = None, groups: Optional[int] = None):
        self.t = into
        self.shape = (like.shape[0], channels, height, width)
        self.device = like.device
        # channels-last in, channels-last out (what oneDNN's bf16 kernels prefer; a
        # band of rows of such a tensor is one contiguous block)
        self.format = (torch.channels_last if like.dim() == 4 and like.shape[1] > 1
                       and like.is_contiguous(memory_format=torch.channels_last)
                       and not like.is_contiguous() else torch.contiguous_format)
        self.moments = Moments(groups) if groups else None

    def write(self, r0: int, r1: int, value: Tensor, c0: int = 0,
              c1: Optional[int] = None) -> None:
        """Rows [r0, r1) (and columns [c0, c1), default all) of the output."""
        if self.t is None:
            self.t = torch.empty(self.shape, dtype=value.dtype, device=self.device,
                                 memory_format=self.format)
        self.t[:, :, r0:r1, c0:c1] = value
        if self.moments is not None:
            # of the stored values (a bf16 output is normalised from its bf16 values)
            self.moments.add(value if value.dtype == self.t.dtype else value.to(self.t.dtype))

    def result(self) -> tuple[Tensor, Optional[tuple[Tensor, Tensor]]]:
        return self.t, (self.moments.mean_var() if self.moments is not None else None)


def conv_in(conv: nn.Conv2d, x: Tensor, elems: int = BAND_ELEMS,
            groups: Optional[int] = None):
    """A plain stride-1 3x3 convolution of the whole ``x``, band by band; returns the
    output and its GroupNorm moments (``groups`` of them; None without)."""
    h = x.shape[2]
    out = _Out(x, conv.out_channels, h, x.shape[3], groups=groups)
    for r0, r1 in _bands(h, band_rows(max(conv.in_channels, conv.out_channels), x.shape[3], elems)):
        a, b, top, bottom = _halo(r0, r1, h)
        out.write(r0, r1, _conv(conv, x[:, :, a:b], top, bottom))
    return out.result()


def _conv(conv: nn.Conv2d, rows: Tensor, top: int, bottom: int) -> Tensor:
    """``conv`` (3x3, stride 1, zero padding 1) on a band holding its halo rows."""
    if top or bottom:
        rows = F.pad(rows, (0, 0, top, bottom))
    # the height padding is done above, the width's here; autocast casts F.conv2d's
    # arguments as it does the module's call
    return F.conv2d(rows, conv.weight, conv.bias, padding=(0, 1))


def norm_conv(gn, conv: nn.Conv2d, x: Tensor, stats, elems: int = BAND_ELEMS) -> Tensor:
    """conv(swish(gn(x))) over the whole ``x`` (the encoder's and decoder's output head)."""
    h, w = x.shape[2], x.shape[3]
    terms = _terms(gn, stats, x)
    out = _Out(x, conv.out_channels, h, w)
    for r0, r1 in _bands(h, band_rows(max(conv.in_channels, conv.out_channels), w, elems)):
        a, b, top, bottom = _halo(r0, r1, h)
        out.write(r0, r1, _conv(conv, _activated_rows(terms, x, a, b), top, bottom))
    return out.t


def resnet_block(blk, x: Tensor, stats, owned: bool, elems: int = BAND_ELEMS):
    """``blk(x)`` (a ``ResnetBlock``) and its output's moments; ``stats``: ``x``'s
    (None: computed here).

    With ``owned`` (nobody else holds ``x``) the output reuses ``x``'s memory. Same
    width: it overwrites ``x`` band by band (a band's rows of ``x`` are read for the
    last time by that band's skip connection). Narrowing (the decoder's first block of
    a level): the 1x1 skip projection is written into ``x``'s first ``cout`` channels
    one row behind the first convolution (whose next band still reads the row above
    it), and the output then overwrites that; the block keeps ``x`` and its
    intermediate alive, not a third full-size tensor."""
    h, w = x.shape[2], x.shape[3]
    cin, cout = blk.in_channels, blk.out_channels
    rows = band_rows(max(cin, cout), w, elems)
    terms = _terms(blk.norm1, stats, x)
    groups = blk.norm2.num_groups
    narrow = owned and cout < cin
    mid = _Out(x, cout, h, w, groups=groups)
    done = 0                                    # rows of x already holding the skip
    for r0, r1 in _bands(h, rows):
        a, b, top, bottom = _halo(r0, r1, h)
        mid.write(r0, r1, _conv(blk.conv1, _activated_rows(terms, x, a, b), top, bottom))
        if narrow:
            end = h if r1 == h else r1 - 1     # the next band reads row r1 - 1
            if end > done:
                x[:, :cout, done:end] = blk.nin_shortcut(x[:, :, done:end])
                done = end
    hid, hid_stats = mid.result()
    terms = _terms(blk.norm2, hid_stats, hid)
    skips = x[:, :cout] if narrow else x
    into = skips if owned and cout <= cin else None
    out = _Out(x, cout, h, w, into=into, groups=groups)
    for r0, r1 in _bands(h, rows):
        a, b, top, bottom = _halo(r0, r1, h)
        y = _conv(blk.conv2, _activated_rows(terms, hid, a, b), top, bottom)
        skip = skips[:, :, r0:r1]
        if cin != cout and not narrow:
            skip = blk.nin_shortcut(skip)
        out.write(r0, r1, skip + y)
    return out.result()


def attn_block(blk, x: Tensor, stats, owned: bool, elems: int = BAND_ELEMS,
               window: Optional[int] = None):
    """``blk(x)`` (an ``AttnBlock``) and its output's moments: q, k and v are built
    band by band straight into token order, then the queries attend block by block and
    each block's projected result is added to its positions.

    ``window`` (positions per side, None: global): a map larger than ``window`` on a
    side is not attended globally; each block of ``window // 4`` square queries
    attends to the ``window x window`` keys centred on it (moved inside the map at its
    borders). Global attention costs the square of the positions, i.e. per pixel it
    grows with the image; a window keeps it constant. Maps within the window (every
    image up to the size the autoencoders were trained at) are attended globally, as
    the module does."""
    bsz, c, h, w = x.shape
    rows = band_rows(c, w, elems)
    centre, scale, shift = _terms(blk.norm, stats, x)
    tokens = {}
    for r0, r1 in _bands(h, rows):
        n = torch.addcmul(shift, x[:, :, r0:r1].float() - centre, scale)   # normalize_with
        for name in ("q", "k", "v"):
            t = getattr(blk, name)(n).flatten(2).transpose(1, 2)       # B x n x C
            if name not in tokens:
                tokens[name] = torch.empty(bsz, 1, h * w, c, dtype=t.dtype, device=x.device)
            tokens[name][:, 0, r0 * w:r1 * w] = t
    q, k, v = tokens["q"], tokens["k"], tokens["v"]
    out = _Out(x, c, h, w, into=x if owned else None, groups=blk.norm.num_groups)
    if window is None or (h <= window and w <= window):
        for r0, r1 in _bands(h, rows):
            o = F.scaled_dot_product_attention(q[:, :, r0 * w:r1 * w], k, v)
            o = o.squeeze(1).transpose(1, 2).reshape(bsz, c, r1 - r0, w)
            out.write(r0, r1, x[:, :, r0:r1] + blk.proj_out(o))
        return out.result()
    grid = {name: t.view(bsz, h, w, c) for name, t in tokens.items()}
    block = max(1, window // 4)
    wh, ww = min(h, window), min(w, window)
    for y0, y1 in _bands(h, block):
        ky = min(max(0, (y0 + y1) // 2 - wh // 2), h - wh)
        for x0, x1 in _bands(w, block):
            kx = min(max(0, (x0 + x1) // 2 - ww // 2), w - ww)
            qb = grid["q"][:, y0:y1, x0:x1].reshape(bsz, 1, -1, c)
            kb = grid["k"][:, ky:ky + wh, kx:kx + ww].reshape(bsz, 1, -1, c)
            vb = grid["v"][:, ky:ky + wh, kx:kx + ww].reshape(bsz, 1, -1, c)
            o = F.scaled_dot_product_attention(qb, kb, vb)
            o = o.squeeze(1).transpose(1, 2).reshape(bsz, c, y1 - y0, x1 - x0)
            out.write(y0, y1, x[:, :, y0:y1, x0:x1] + blk.proj_out(o), x0, x1)
    return out.result()


def downsample(ds, x: Tensor, elems: int = BAND_ELEMS, groups: Optional[int] = None):
    """``ds(x)``: one zero row/column on the bottom/right, then a stride-2 3x3 conv;
    output row i reads input rows 2i .. 2i+2. Returns the output and its moments."""
    if not ds.with_conv:
        return ds(x), None
    h, w = x.shape[2], x.shape[3]
    ho, wo = h // 2, w // 2
    out = _Out(x, ds.conv.out_channels, ho, wo, groups=groups)
    for r0, r1 in _bands(ho, max(1, band_rows(ds.conv.in_channels, w, elems) // 2)):
        a, b = 2 * r0, min(h, 2 * r1 + 1)
        band = F.pad(x[:, :, a:b], (0, 1, 0, 2 * r1 + 1 - b))
        out.write(r0, r1, ds.conv(band))
    return out.result()


def _phase_kernels(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """A 3x3 convolution after nearest x2 upsampling, as four 2x2 convolutions of the
    input (one per output phase), stacked along the output channels in the order
    (row phase, column phase) -> (weight ``4*Cout x Cin x 2 x 2``, bias ``4*Cout``).

    Output row 2i reads upsampled rows 2i-1, 2i, 2i+1, i.e. input rows i-1, i, i: taps
    (w0, w1 + w2) on (i-1, i); output row 2i+1 reads input rows i, i, i+1: taps
    (w0 + w1, w2) on (i, i+1). Same for columns. 16 multiply-adds per input position
    and channel pair instead of 36: the same result in 2.25x fewer FLOPs. Cached on
    the module until its weight changes."""
    w, bias = conv.weight, conv.bias
    key = (w._version, w.data_ptr(), w.dtype)
    cached = getattr(conv, "_banded_phases", None)
    if cached is not None and cached[0] == key:
        return cached[1]

    def fold(t: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        a, b, c = t.unbind(dim)
        return torch.stack([a, b + c], dim), torch.stack([a + b, c], dim)
    kernels = [k for rows in fold(w.detach(), 2) for k in fold(rows, 3)]
    out_bias = bias.detach().repeat(4) if bias is not None else None
    value = (torch.cat(kernels, 0), out_bias)
    conv._banded_phases = (key, value)
    return value


def upsample(us, x: Tensor, elems: int = BAND_ELEMS, groups: Optional[int] = None):
    """``us(x)``: nearest-neighbour x2, then a 3x3 conv, for bands of output rows,
    computed as the four 2x2 phase convolutions of the input (:func:`_phase_kernels`)
    with no upsampled copy. Returns the output and its moments."""
    h, w = x.shape[2], x.shape[3]
    if not us.with_conv:
        return us(x), None
    cout = us.conv.out_channels
    weight, bias = _phase_kernels(us.conv)
    out = _Out(x, cout, 2 * h, 2 * w, groups=groups)
    # input rows per band: its 4*Cout phase outputs are the band's largest temporary
    rows = max(1, band_rows(4 * cout, w, elems))
    for i0, i1 in _bands(h, rows):
        n = i1 - i0
        a, b = max(0, i0 - 1), min(h, i1 + 1)
        # input rows i0-1 .. i1 with the zero border, and a zero column on each side
        src = F.pad(x[:, :, a:b], (1, 1, int(i0 == 0), int(i1 == h)))
        y = F.conv2d(src, weight, bias)                 # B x 4*Cout x (n+1) x (w+1)
        band = torch.empty((x.shape[0], cout, 2 * n, 2 * w), dtype=y.dtype, device=y.device,
                           memory_format=out.format)
        for p, (py, px) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            band[:, :, py::2, px::2] = y[:, p * cout:(p + 1) * cout, py:py + n, px:px + w]
        out.write(2 * i0, 2 * i1, band)
    return out.result()


def _groups(module) -> int:
    return next(m.num_groups for m in module.modules() if isinstance(m, nn.GroupNorm))


def _level(level, h: Tensor, stats, owned: bool, elems: int, window: Optional[int]):
    use_attn = len(level.attn) > 0
    for i, blk in enumerate(level.block):
        h, stats = resnet_block(blk, h, stats, owned, elems)
        owned = True
        if use_attn:
            h, stats = attn_block(level.attn[i], h, stats, True, elems, window)
    return h, stats


def _middle(mid, h: Tensor, stats, elems: int, window: Optional[int]):
    h, stats = resnet_block(mid.block_1, h, stats, True, elems)
    h, stats = attn_block(mid.attn_1, h, stats, True, elems, window)
    return resnet_block(mid.block_2, h, stats, True, elems)


def encoder_forward(enc, x: Tensor, elems: int = BAND_ELEMS,
                    window: Optional[int] = None) -> Tensor:
    """``Encoder.forward`` computed band by band (same result, bounded temporaries)."""
    g = _groups(enc)
    h, stats = conv_in(enc.conv_in, x, elems, g)
    last = len(enc.down) - 1
    for i, level in enumerate(enc.down):
        h, stats = _level(level, h, stats, True, elems, window)
        if i != last:
            h, stats = downsample(level.downsample, h, elems, g)
    h, stats = _middle(enc.mid, h, stats, elems, window)
    return norm_conv(enc.norm_out, enc.conv_out, h, stats, elems)


def decoder_forward(dec, z: Tensor, elems: int = BAND_ELEMS,
                    window: Optional[int] = None) -> Tensor:
    """``Decoder.forward`` computed band by band (same result, bounded temporaries)."""
    g = _groups(dec)
    h, stats = conv_in(dec.conv_in, z, elems, g)
    h, stats = _middle(dec.mid, h, stats, elems, window)
    for i in reversed(range(len(dec.up))):
        level = dec.up[i]
        h, stats = _level(level, h, stats, True, elems, window)
        if i != 0:
            h, stats = upsample(level.upsample, h, elems, g)
    h = norm_conv(dec.norm_out, dec.conv_out, h, stats, elems)
    return torch.tanh(h) if dec.tanh_out else h


# -- how much memory a banded pass keeps --------------------------------------------------
def peak_bytes(ae, kind: str, height: int, width: int, itemsize: int = 4,
               batch: int = 1) -> int:
    """The largest set of full-size tensors a banded ``kind`` pass ("encode": image
    ``height x width`` in; "decode": image ``height x width`` out) of ``ae`` keeps alive
    at once, in bytes, for activations of ``itemsize`` bytes. Band temporaries (a few
    MB) and the weights are not counted."""
    ch = ae.encoder.conv_in.out_channels
    mults = list(ae.ch_mult)
    widths = [ch * m for m in mults]
    sizes = [(height // 2 ** i) * (width // 2 ** i) for i in range(len(mults))]
    worst = 0

    def block(cin, cout, px):
        # input + intermediate (+ a separate output when the width grows)
        return (cin + cout + (cout if cin < cout else 0)) * px

    def attn(c, px):
        # input + q, k, v tokens + one band's result
        return 4 * c * px
    if kind == "encode":
        prev = ch
        for i, (c, px) in enumerate(zip(widths, sizes)):
            worst = max(worst, block(prev, c, px), prev * px + c * px)
            prev = c
            if i != len(mults) - 1:
                worst = max(worst, c * px + c * sizes[i + 1])
        px = sizes[-1]
        worst = max(worst, block(prev, prev, px), attn(prev, px))
    elif kind == "decode":
        c = widths[-1]
        px = sizes[-1]
        worst = max(worst, block(c, c, px), attn(c, px))
        prev = c
        for i in reversed(range(len(mults))):
            c, px = widths[i], sizes[i]
            worst = max(worst, block(prev, c, px))
            prev = c
            if i != 0:
                worst = max(worst, c * px + c * sizes[i - 1])
    else:
        raise ValueError(f"kind must be 'encode' or 'decode', got {kind!r}")
    return int(worst) * itemsize * batch
