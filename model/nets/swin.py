"""Swin-Transformer stages of ResShift's UNet: window attention with a learned relative
position bias, every second block on cyclically shifted windows (reproducing the
reference's mask labelling; see ``shifted_window_mask``)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import GroupNorm32, is_tracing as _is_tracing

_MASK_FILL = -100.0  # additive value the reference uses between different regions


def relative_position_index(window: int, device=None) -> torch.Tensor:
    """Index into the ``((2w-1)^2, heads)`` bias table for every token pair.

    Tokens of a ``w x w`` window are numbered row-major (``k = row * w + col``).
    Returns an int64 ``(w*w, w*w)`` tensor with
    ``idx[p, q] = (row_p - row_q + w - 1) * (2w - 1) + (col_p - col_q + w - 1)``.
    """
    pos = torch.arange(window * window, device=device)
    rows, cols = pos // window, pos % window
    d_row = rows[:, None] - rows[None, :] + (window - 1)
    d_col = cols[:, None] - cols[None, :] + (window - 1)
    return d_row * (2 * window - 1) + d_col


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Additive attention mask for shifted windows, as the reference computes it.

    The reference labels three bands of *rows* of the (rolled) feature map,
    ``[0, H-w)``, ``[H-w, H-s)`` and ``[H-s, H)``, and then reads each window's
    labels in column-major order while the tokens are row-major.  Net effect: the
    label of token ``(row i, col j)`` of the window in window-row ``wr`` is the
    band of feature row ``wr * w + j``.  Only the bottom window row therefore gets
    a non-trivial mask (columns ``< w - s`` vs ``>= w - s``).  Pairs with
    different labels receive ``-100``; all others ``0``.

    Returns a float32 ``(nW, w*w, w*w)`` tensor, ``nW = (H/w) * (W/w)``, windows
    numbered row-major.  With ``shift == 0`` the mask is all zeros.
    """
    n_rows, n_cols = height // window, width // window
    r = torch.arange(height, device=device)
    band = (r >= height - window).long() + (r >= height - shift).long() if shift > 0 else torch.zeros_like(r)
    # band of feature row (wr * window + j), indexed [wr, j]
    per_row = band[: n_rows * window].reshape(n_rows, 1, 1, window)
    labels = per_row.expand(n_rows, n_cols, window, window).reshape(n_rows * n_cols, window * window)
    different = labels[:, :, None] != labels[:, None, :]
    zero = torch.zeros((), dtype=torch.float32, device=device)
    return torch.where(different, zero + _MASK_FILL, zero)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows.

    Holds ``relative_position_bias_table ((2w-1)^2, heads)``, the persistent
    ``relative_position_index (w*w, w*w)`` buffer, ``qkv`` and ``proj`` linears.
    Attention runs through ``F.scaled_dot_product_attention`` with the additive
    bias (relative position bias, plus the shift mask when given).
    """

    def __init__(self, dim: int, window: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.window = window
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self) -> torch.Tensor:
        """``(heads, N, N)`` relative position bias, ``N = w*w``."""
        n = self.window * self.window
        table = self.relative_position_bias_table
        bias = table[self.relative_position_index.long().reshape(-1)].reshape(n, n, self.num_heads)
        return bias.permute(2, 0, 1)

    def forward(self, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            tokens: ``(B, nW, N, C)`` window tokens (``N = w*w``, row-major).
            mask: optional ``(nW, N, N)`` additive shift mask shared by the batch.
        Returns:
            ``(B, nW, N, C)``.
        """
        b, n_win, n, c = tokens.shape
        heads, head_dim = self.num_heads, c // self.num_heads
        qkv = self.qkv(tokens).reshape(b, n_win, n, 3, heads, head_dim)
        bias = self.position_bias().to(qkv.dtype)  # (heads, N, N)
        if mask is None:
            # windows folded into the batch: (B*nW, heads, N, d); bias broadcast
            q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b * n_win, heads, n, head_dim).unbind(0)
            attn_bias = bias.unsqueeze(0)
        else:
            # windows folded into the heads: (B, nW*heads, N, d); bias broadcast over B
            q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, n_win * heads, n, head_dim).unbind(0)
            attn_bias = (bias.unsqueeze(0) + mask.to(qkv.dtype).unsqueeze(1)).reshape(1, n_win * heads, n, n)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.attn_drop if self.training else 0.0
        )
        out = out.reshape(b, n_win, heads, n, head_dim).transpose(2, 3).reshape(b, n_win, n, c)
        return self.proj_drop(self.proj(out))


class ConvMlp(nn.Module):
    """Pointwise two-layer MLP on ``(B, C, H, W)`` maps (1x1 convs ``fc1``, ``fc2``, GELU)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, nW, w*w, C)``; windows and in-window tokens row-major."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // window, window, w // window, window)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // window) * (w // window), window * window, c)


def _from_windows(tokens: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`: ``(B, nW, w*w, C) -> (B, C, H, W)``."""
    b, _, _, c = tokens.shape
    x = tokens.reshape(b, height // window, width // window, window, window, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, height, width)


class SwinBlock(nn.Module):
    """Pre-norm (GroupNorm) Swin block on ``(B, C, H, W)`` maps.

    ``x = x + unroll(WMSA(windows(roll(GN(x)))))``; ``x = x + MLP(GN(x))``.

    ``attn_mask`` (only registered when the block shifts) is the mask for the
    construction resolution, kept for checkpoint compatibility.  The forward pass
    always uses a mask derived from the current size (cached per size).
    """

    def __init__(
        self,
        dim: int,
        resolution: Tuple[int, int],
        num_heads: int,
        window: int,
        shift: int,
        mlp_ratio: float,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ):
        super().__init__()
        if min(resolution) <= window:
            # a stage no larger than one window: a single unshifted window
            window, shift = min(resolution), 0
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window={window})")
        self.window = window
        self.shift = shift
        self.norm1 = GroupNorm32(dim)
        self.attn = WindowAttention(dim, window, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = GroupNorm32(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop)
        if shift > 0:
            self.register_buffer("attn_mask", shifted_window_mask(resolution[0], resolution[1], window, shift))
        else:
            self.attn_mask = None
        self._mask_cache: Dict[tuple, torch.Tensor] = {}

    def _mask_for(self, height: int, width: int, device: torch.device) -> Optional[torch.Tensor]:
        if self.shift == 0:
            return None
        if _is_tracing():
            # keep the mask a function of the (possibly symbolic) size in exported graphs
            return shifted_window_mask(height, width, self.window, self.shift, device=device)
        key = (height, width, str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            if len(self._mask_cache) >= 4:
                self._mask_cache.clear()
            mask = shifted_window_mask(height, width, self.window, self.shift, device=device)
            self._mask_cache[key] = mask
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; ``H``, ``W`` multiples of the window."""
        _, _, height, width = x.shape
        if not _is_tracing() and (height % self.window or width % self.window):
            raise ValueError(f"feature map {height}x{width} is not a multiple of the window size {self.window}")
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(2, 3))
        h = self.attn(_to_windows(h, self.window), self._mask_for(height, width, x.device))
        h = _from_windows(h, self.window, height, width)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + h
        return x + self.mlp(self.norm2(x))


class _PointwiseProjection(nn.Module):
    """1x1 conv ``proj`` optionally followed by GroupNorm ``norm``."""

    def __init__(self, in_ch: int, out_ch: int, with_norm: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 1)
        self.norm = GroupNorm32(out_ch) if with_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class SwinStage(nn.Module):
    """``patch_embed`` (1x1 conv to the Swin width) -> Swin blocks -> ``patch_unembed``.

    No residual around the stage.  ``(B, C, H, W) -> (B, C, H, W)``.
    Blocks alternate unshifted / shifted (``shift = window // 2``).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        num_heads: int,
        window: int,
        depth: int,
        resolution: int,
        mlp_ratio: float,
        drop: float = 0.0,
        patch_norm: bool = False,
    ):
        super().__init__()
        self.patch_embed = _PointwiseProjection(in_chans, embed_dim, patch_norm)
        self.patch_unembed = _PointwiseProjection(embed_dim, in_chans, patch_norm)
        self.blocks = nn.ModuleList(
            SwinBlock(
                embed_dim,
                (resolution, resolution),
                num_heads,
                window,
                shift=(window // 2) if i % 2 else 0,
                mlp_ratio=mlp_ratio,
                drop=drop,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            x = block(x)
        return self.patch_unembed(x)

