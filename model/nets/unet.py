"""Swin-UNet denoiser of ResShift, written against the released checkpoint format.

The network is a guided-diffusion style UNet (residual blocks with FiLM timestep
conditioning, strided-conv downsampling, nearest+conv upsampling, long skip
connections) in which the spatial self-attention blocks are replaced by small
Swin-Transformer stages (window attention with a learned relative position bias,
every second block using cyclically shifted windows).

Compatibility contract
----------------------
* ``SwinUNet(**params)`` accepts the hyper-parameter names of the official YAML
  ``model.params`` section and builds a module whose ``state_dict()`` has exactly
  the keys, order and shapes of the official checkpoints, including the
  persistent buffers ``attn.relative_position_index`` and ``blocks.<i>.attn_mask``.
* Numerically it reproduces the official forward pass, including two behaviours
  of the reference that differ from textbook Swin:

  - Shifted-window masks are recomputed from the *current* feature size on every
    call (the stored ``attn_mask`` buffer is never read by the reference), and the
    region labelling the reference produces only distinguishes the window rows at
    the bottom edge, indexing the in-window *column* (see
    :func:`shifted_window_mask`).  We reproduce that labelling exactly.
  - Whether a stage shifts, and its window size, is decided once from the
    construction resolution (``image_size``): a stage built at a resolution
    ``<= window_size`` never shifts and uses ``window = resolution`` even when the
    run-time feature map is larger.

Shapes: ``B`` batch, ``C`` channels, ``H x W`` latent size.  At run time ``H`` and
``W`` must be multiples of ``window_size * 2 ** (len(channel_mult) - 1)`` (64 for
the released models), and ``lq`` must be ``lq_size / image_size`` times larger
than the latent.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import GroupNorm32
from .swin import SwinStage, relative_position_index, shifted_window_mask

__all__ = [
    "SwinUNet",
    "unet_from_config",
    "timestep_embedding",
    "shifted_window_mask",
    "relative_position_index",
]

# ----------------------------------------------------------------------------
# small building blocks
# ----------------------------------------------------------------------------



def _conv(dims: int, *args, **kwargs) -> nn.Module:
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    if dims == 3:
        return nn.Conv3d(*args, **kwargs)
    raise ValueError(f"dims must be 1, 2 or 3, got {dims}")


def _avg_pool(dims: int, *args, **kwargs) -> nn.Module:
    if dims == 1:
        return nn.AvgPool1d(*args, **kwargs)
    if dims == 2:
        return nn.AvgPool2d(*args, **kwargs)
    if dims == 3:
        return nn.AvgPool3d(*args, **kwargs)
    raise ValueError(f"dims must be 1, 2 or 3, got {dims}")


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    Args:
        timesteps: ``(B,)`` tensor, any real or integer dtype.
        dim: embedding width.
    Returns:
        ``(B, dim)`` float32 tensor laid out as ``[cos(t*f_0..), sin(t*f_0..)]``
        with ``f_i = max_period ** (-i / (dim // 2))``; zero-padded when ``dim`` is odd.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / half)
    angles = timesteps.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class _UsesEmbedding(nn.Module):
    """Marker base: ``forward(x, emb)`` also consumes the timestep embedding."""


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that hands the timestep embedding to the layers that want it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _UsesEmbedding) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve the spatial size: 3x3 stride-2 conv (``op``), or 2x2 average pooling.

    ``(B, C, H, W) -> (B, C_out, H/2, W/2)``.
    """

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or channels
        stride = (1, 2, 2) if dims == 3 else 2
        if use_conv:
            self.op = _conv(dims, channels, out_channels, 3, stride=stride, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("pooling downsample cannot change the channel count")
            self.op = _avg_pool(dims, kernel_size=stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the spatial size (nearest neighbour), optionally followed by a 3x3 conv.

    ``(B, C, H, W) -> (B, C_out, 2H, 2W)``.
    """

    def __init__(self, channels: int, use_conv: bool, dims: int = 2, out_channels: Optional[int] = None):
        super().__init__()
        self.dims = dims
        if use_conv:
            self.conv = _conv(dims, channels, out_channels or channels, 3, padding=1)
        else:
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 3:
            size = (x.shape[2], x.shape[3] * 2, x.shape[4] * 2)
            x = F.interpolate(x, size=size, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class ResBlock(_UsesEmbedding):
    """Residual block conditioned on the timestep embedding.

    ``h = conv(SiLU(GN(x)))``; then either ``GN(h) * (1 + scale) + shift``
    (``use_scale_shift_norm``) or ``GN(h + e)``, followed by SiLU, dropout and a
    zero-initialised conv; output ``skip(x) + h``.

    Shapes: ``x (B, C, H, W)``, ``emb (B, E)`` -> ``(B, C_out, H', W')`` where
    ``H' = H`` (or ``2H`` / ``H/2`` with ``up`` / ``down``).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: Optional[int] = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels),
            nn.SiLU(),
            _conv(dims, channels, out_channels, 3, padding=1),
        )
        self.resample = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False, dims)
            self.x_upd: nn.Module = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        film_width = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, film_width))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _conv(dims, out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = _conv(dims, channels, out_channels, 3, padding=1)
        else:
            self.skip_connection = _conv(dims, channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        norm_in, act_in, conv_in = self.in_layers
        if self.resample:
            h = conv_in(self.h_upd(act_in(norm_in(x))))
            x = self.x_upd(x)
        else:
            h = conv_in(act_in(norm_in(x)))
        e = self.emb_layers(emb).to(h.dtype)
        e = e.reshape(e.shape + (1,) * (h.dim() - 2))
        norm_out = self.out_layers[0]
        tail = self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = tail(norm_out(h) * (1 + scale) + shift)
        else:
            h = tail(norm_out(h + e))
        return self.skip_connection(x) + h



# ----------------------------------------------------------------------------
# the UNet
# ----------------------------------------------------------------------------


class SwinUNet(nn.Module):
    """ResShift denoiser (``UNetModelSwin`` checkpoint layout).

    Args use the official names.  ``image_size`` is the latent resolution the model
    was built for (it fixes buffer shapes and which stages shift windows, not the
    run-time size).  ``attention_resolutions`` lists feature *resolutions*
    (``image_size / 2**level``) that get a Swin stage after the first residual
    block of that level (encoder) / the first block of that level (decoder); the
    middle block always has one.  ``num_res_blocks`` may be an int or a per-level
    list.  Heads per Swin stage: ``swin_embed_dim // num_head_channels``, or
    ``num_heads`` when ``num_head_channels == -1``.

    Conditioning: ``lq`` (and ``mask`` when ``cond_mask``) are concatenated along
    channels, passed through ``feature_extractor`` (identity when
    ``lq_size == image_size``, otherwise ``log2(lq_size / image_size)`` stages of
    conv3x3+SiLU+stride-2 conv doubling the width from 16) and concatenated to the
    network input.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        attention_resolutions: Iterable[int],
        channel_mult: Sequence[float] = (1, 2, 2, 4),
        num_res_blocks: Union[int, Sequence[int]] = 2,
        dropout: float = 0.0,
        conv_resample: bool = True,
        dims: int = 2,
        use_fp16: bool = False,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = False,
        swin_depth: int = 2,
        swin_embed_dim: int = 192,
        window_size: int = 8,
        mlp_ratio: float = 4,
        cond_lq: bool = True,
        cond_mask: bool = False,
        lq_size: int = 256,
        norm_groups: int = 32,
        **unused,
    ):
        super().__init__()
        num_heads = int(unused.pop("num_heads", 1))
        patch_norm = bool(unused.pop("patch_norm", False))
        # everything else (use_checkpoint, use_new_attention_order, ...) is irrelevant here

        channel_mult = tuple(channel_mult)
        if isinstance(num_res_blocks, int):
            num_res_blocks = [num_res_blocks] * len(channel_mult)
        num_res_blocks = list(num_res_blocks)
        if len(num_res_blocks) != len(channel_mult):
            raise ValueError("num_res_blocks must have one entry per channel_mult level")
        heads = num_heads if num_head_channels == -1 else swin_embed_dim // num_head_channels
        attention_resolutions = tuple(int(r) for r in attention_resolutions)

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.channel_mult = channel_mult
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.cond_lq = cond_lq
        self.cond_mask = cond_mask
        self.lq_size = lq_size
        self.window_size = window_size
        self.dtype = torch.float16 if use_fp16 else torch.float32

        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )

        cond_in = 4 if cond_mask else 3
        if cond_lq and lq_size == image_size:
            self.feature_extractor: nn.Module = nn.Identity()
            cond_out = cond_in
        else:
            stages = []
            width, cond_out = cond_in, 16
            for _ in range(max(0, int(math.log2(lq_size / image_size)))):
                stages += [
                    nn.Conv2d(width, cond_out, 3, 1, 1),
                    nn.SiLU(),
                    Downsample(cond_out, True, out_channels=cond_out * 2),
                ]
                cond_out *= 2
                width = cond_out
            self.feature_extractor = nn.Sequential(*stages)

        def res(ch_in: int, ch_out: Optional[int] = None, **kw) -> ResBlock:
            return ResBlock(
                ch_in, emb_dim, dropout, out_channels=ch_out, dims=dims,
                use_scale_shift_norm=use_scale_shift_norm, **kw,
            )

        def swin(ch: int, resolution: int) -> SwinStage:
            return SwinStage(
                ch, swin_embed_dim, heads, window_size, swin_depth, resolution, mlp_ratio,
                drop=dropout, patch_norm=patch_norm,
            )

        ch = first_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [EmbedSequential(_conv(dims, in_channels + cond_out, ch, 3, padding=1))]
        )
        skip_chans = [ch]
        res_now = image_size
        last = len(channel_mult) - 1
        for level, mult in enumerate(channel_mult):
            for j in range(num_res_blocks[level]):
                layers = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if j == 0 and res_now in attention_resolutions:
                    layers.append(swin(ch, res_now))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chans.append(ch)
            if level != last:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, dims, ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_chans.append(ch)
                res_now //= 2

        self.middle_block = EmbedSequential(res(ch), swin(ch, res_now), res(ch))

        self.output_blocks = nn.ModuleList()
        for level in range(last, -1, -1):
            mult = channel_mult[level]
            for j in range(num_res_blocks[level] + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if j == 0 and res_now in attention_resolutions:
                    layers.append(swin(ch, res_now))
                if level and j == num_res_blocks[level]:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, dims, ch))
                    res_now *= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch),
            nn.SiLU(),
            _conv(dims, first_ch, out_channels, 3, padding=1),
        )
        # Official models use 32 groups. Narrow models (the bundled demo: 32 channels) may
        # ask for fewer: with one channel per group every norm erases each channel's
        # per-image scale, so the last layer cannot scale its output with the input's
        # noise level. The weights do not depend on the group count.
        if norm_groups != 32:
            for m in self.modules():
                if isinstance(m, nn.GroupNorm):
                    if m.num_channels % norm_groups:
                        raise ValueError(f"norm_groups {norm_groups} does not divide a "
                                         f"{m.num_channels}-channel GroupNorm")
                    m.num_groups = int(norm_groups)
        if use_fp16:
            self.convert_to_fp16()

    @property
    def lq_scale(self) -> int:
        """How many times larger (per side) than the latent ``lq`` must be."""
        if isinstance(self.feature_extractor, nn.Identity):
            return 1
        return 2 ** (len(self.feature_extractor) // 3)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        lq: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predict ``x_0``.

        Args:
            x: ``(B, in_channels, H, W)`` normalised noisy latent.
            timesteps: ``(B,)`` 0-based step indices (int or float); a scalar is
                broadcast over the batch.
            lq: ``(B, 3, s*H, s*W)`` LQ image in ``[-1, 1]``, ``s = lq_scale``.
            mask: ``(B, 1, s*H, s*W)`` in ``[-1, 1]`` (1 = area to fill), only
                with ``cond_mask``.
        Returns:
            ``(B, out_channels, H, W)`` in the dtype of ``x``.
        """
        if timesteps.dim() == 0:
            timesteps = timesteps.reshape(1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels)).to(self.dtype)

        if lq is not None:
            if not self.cond_lq:
                raise ValueError("this model is not conditioned on an LQ image")
            if mask is not None:
                if not self.cond_mask:
                    raise ValueError("this model does not take a mask")
                lq = torch.cat([lq, mask.to(lq.dtype)], dim=1)
            cond = self.feature_extractor(lq.to(self.dtype))
            inp = torch.cat([x, cond.to(x.dtype)], dim=1)
        else:
            inp = x

        h = inp.to(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))

    def convert_to_fp16(self) -> None:
        """Cast conv / linear weights of the trunk to float16 (for ``use_fp16``): the
        official semantics, where the time embedding and the output head stay float32,
        the trunk's activations are cast to float16 on the way in (``self.dtype``) and
        the output comes back in the input's dtype. GroupNorms compute in float32
        (``GroupNorm32``). Idempotent. Loading a checkpoint with ``assign=True`` (a
        meta-built network) puts float32 tensors back: call it again after loading
        (``Restorer`` does)."""
        for part in (self.feature_extractor, self.input_blocks, self.middle_block, self.output_blocks):
            for m in part.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                    m.half()


def unet_from_config(params: dict) -> SwinUNet:
    """Build a :class:`SwinUNet` from an official YAML ``model.params`` dict."""
    return SwinUNet(**params)
