"""DIRformer: DiffIR's restorer, a Restormer-style U-shaped transformer driven by the IPR.

Restormer (Zamir et al. 2022) blocks: a channel LayerNorm, "transposed" attention over
channels (MDTA) and a gated depthwise-conv feed-forward (GDFN). DiffIR adds one thing
to each of the two halves of a block: before the attention and before the FFN, the
normalised features are modulated channel by channel by the IPR,
x * a(IPR) + b(IPR), with (a, b) = Linear(256 -> 2C, no bias) split in two halves.

Levels: C, 2C, 4C, 8C channels at 1, 1/2, 1/4, 1/8 of the input resolution; the decoder
ends at 2C (no channel reduction after the last skip concat), a refinement stage, and
an x4 pixel-shuffle upsampler. x2/x1 models pixel-unshuffle the LQ by 2/4 first, so the
x4 upsampler lands on 2x/1x; the LQ upsampled by nearest neighbour is added at the end.
Module names follow the official state dict (``G.*``) so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import IPR_WIDTH, DiffIRConfig

LN_EPS = 1e-5


class _NormAffine(nn.Module):
    """Holds the LayerNorm's weight (and bias): the official keys are ``norm.body.*``."""

    def __init__(self, channels: int, with_bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel; (B, C, H, W) -> same.

    ``BiasFree`` divides by the standard deviation but does not subtract the mean
    (Restormer's choice); ``WithBias`` is the usual LayerNorm with weight and bias.
    """

    def __init__(self, channels: int, kind: str):
        super().__init__()
        self.centred = kind == "WithBias"
        self.body = _NormAffine(channels, with_bias=self.centred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        if self.centred:
            x = x - x.mean(dim=1, keepdim=True)
        x = x / torch.sqrt(var + LN_EPS) * self.body.weight[:, None, None]
        if self.body.bias is not None:
            x = x + self.body.bias[:, None, None]
        return x


def _modulation(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(IPR_WIDTH, 2 * channels, bias=False))


def modulate(x: torch.Tensor, kernel: nn.Module, ipr: torch.Tensor) -> torch.Tensor:
    """x * scale + shift with (scale, shift) = kernel(ipr) halves; x (B, C, H, W)."""
    scale, shift = kernel(ipr).view(x.shape[0], 2 * x.shape[1], 1, 1).chunk(2, dim=1)
    return x * scale + shift


class ChannelAttention(nn.Module):
    """MDTA: attention between channels, not pixels, so its cost is linear in H*W.

    q, k, v from a 1x1 then a depthwise 3x3 convolution; per head, q and k are
    L2-normalised along the pixels and their (C/h x C/h) Gram matrix, times a learned
    per-head temperature, is softmaxed and applied to v.
    """

    def __init__(self, channels: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.kernel = _modulation(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1,
                                    groups=3 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = modulate(x, self.kernel, ipr)
        q, k, v = self.qkv_dwconv(self.qkv(x)).view(b, 3, self.heads, c // self.heads,
                                                     h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """GDFN: 1x1 up to 2 x hidden, depthwise 3x3, GELU(first half) * second half, 1x1 down.

    hidden = int(C * ffn_expansion_factor), truncated as the official code does.
    """

    def __init__(self, channels: int, expansion: float, bias: bool):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden,
                                bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.kernel = _modulation(channels)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = self.project_in(modulate(x, self.kernel, ipr))
        gate, value = self.dwconv(x).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm1(x)), then + ffn(norm2(x)), both IPR-modulated."""

    def __init__(self, channels: int, heads: int, cfg: DiffIRConfig):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, cfg.layernorm)
        self.attn = ChannelAttention(channels, heads, cfg.bias)
        self.norm2 = ChannelLayerNorm(channels, cfg.layernorm)
        self.ffn = GatedFeedForward(channels, cfg.ffn_expansion_factor, cfg.bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ipr)
        return x + self.ffn(self.norm2(x), ipr)


class Stage(nn.ModuleList):
    """A run of TransformerBlocks sharing one IPR (indices match ``nn.Sequential``'s)."""

    def __init__(self, n: int, channels: int, heads: int, cfg: DiffIRConfig):
        super().__init__([TransformerBlock(channels, heads, cfg) for _ in range(n)])

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x, ipr)
        return x


class _Resample(nn.Module):
    """3x3 conv (no bias) then pixel (un)shuffle by 2: ``body.0`` is the official key."""

    def __init__(self, cin: int, cout: int, shuffle: nn.Module):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), shuffle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def downsample(channels: int) -> _Resample:
    """(B, C, H, W) -> (B, 2C, H/2, W/2)."""
    return _Resample(channels, channels // 2, nn.PixelUnshuffle(2))


def upsample(channels: int) -> _Resample:
    """(B, C, H, W) -> (B, C/2, 2H, 2W)."""
    return _Resample(channels, channels * 2, nn.PixelShuffle(2))


class _PatchEmbed(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _x4_tail(channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv to 4C, pixel shuffle 2) stages, then a 3x3 conv to RGB; with bias."""
    up = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2),
                       nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
    return nn.Sequential(up, nn.Conv2d(channels, out_channels, 3, padding=1))


class DIRformer(nn.Module):
    """LQ (B, 3, H, W) in [0, 1] and IPR (B, 256) -> SR (B, 3, sH, sW), not clamped.

    H and W must be multiples of ``cfg.input_multiple`` (pad first).
    """

    def __init__(self, cfg: DiffIRConfig):
        super().__init__()
        self.scale, self.unshuffle = cfg.scale, cfg.unshuffle
        c, heads, blocks = cfg.dim, cfg.heads, cfg.num_blocks
        self.patch_embed = _PatchEmbed(cfg.inp_channels * self.unshuffle ** 2, c, cfg.bias)
        self.encoder_level1 = Stage(blocks[0], c, heads[0], cfg)
        self.down1_2 = downsample(c)
        self.encoder_level2 = Stage(blocks[1], 2 * c, heads[1], cfg)
        self.down2_3 = downsample(2 * c)
        self.encoder_level3 = Stage(blocks[2], 4 * c, heads[2], cfg)
        self.down3_4 = downsample(4 * c)
        self.latent = Stage(blocks[3], 8 * c, heads[3], cfg)
        self.up4_3 = upsample(8 * c)
        self.reduce_chan_level3 = nn.Conv2d(8 * c, 4 * c, 1, bias=cfg.bias)
        self.decoder_level3 = Stage(blocks[2], 4 * c, heads[2], cfg)
        self.up3_2 = upsample(4 * c)
        self.reduce_chan_level2 = nn.Conv2d(4 * c, 2 * c, 1, bias=cfg.bias)
        self.decoder_level2 = Stage(blocks[1], 2 * c, heads[1], cfg)
        self.up2_1 = upsample(2 * c)
        self.decoder_level1 = Stage(blocks[0], 2 * c, heads[0], cfg)
        self.refinement = Stage(cfg.num_refinement_blocks, 2 * c, heads[0], cfg)
        self.tail = _x4_tail(2 * c, cfg.out_channels)

    def forward(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(lq, self.unshuffle) if self.unshuffle > 1 else lq
        enc1 = self.encoder_level1(self.patch_embed(x), ipr)
        enc2 = self.encoder_level2(self.down1_2(enc1), ipr)
        enc3 = self.encoder_level3(self.down2_3(enc2), ipr)
        x = self.latent(self.down3_4(enc3), ipr)
        x = self.reduce_chan_level3(torch.cat([self.up4_3(x), enc3], 1))
        x = self.decoder_level3(x, ipr)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), enc2], 1))
        x = self.decoder_level2(x, ipr)
        x = self.decoder_level1(torch.cat([self.up2_1(x), enc1], 1), ipr)
        x = self.refinement(x, ipr)
        skip = lq if self.scale == 1 else F.interpolate(lq, scale_factor=self.scale,
                                                        mode="nearest")
        return self.tail(x) + skip
