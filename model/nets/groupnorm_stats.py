"""GroupNorm whose statistics can be recorded and overridden (for tiled encode/decode).

Running a VAE tile by tile normalises each tile with its own statistics, which shows as
colour seams. ``StatGroupNorm`` behaves exactly like ``GroupNorm(32, C, eps=1e-6)``
outside a ``groupnorm_stats`` context; inside one it records per-(batch, group) moments
of its input ("record"), normalises with given statistics ("use"), or both ("refine").
See ``model.nets.autoencoder`` for how the restorer uses it (two-pass tiling).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GN_GROUPS = 32
GN_EPS = 1e-6

Core = Tuple[float, float, float, float]




class GroupNormStats:
    """Per-layer, per-(batch, group) moments of GroupNorm inputs.

    For every layer name it holds three float64 tensors of shape ``(B, G)`` (or
    ``(1, G)`` when batch-reduced): ``count`` (number of elements seen),
    ``total`` (sum of x) and ``total_sq`` (sum of x**2). Adding moments from several
    calls (tiles) accumulates them; :meth:`mean_var` turns them into the biased mean
    and variance that GroupNorm uses.
    """

    def __init__(self) -> None:
        self.count: Dict[str, Tensor] = {}
        self.total: Dict[str, Tensor] = {}
        self.total_sq: Dict[str, Tensor] = {}

    # -- container protocol -------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.count

    def __len__(self) -> int:
        return len(self.count)

    def names(self) -> list[str]:
        """Layer names in first-recorded order (the call order of the first pass)."""
        return list(self.count)

    def __repr__(self) -> str:
        return f"GroupNormStats({len(self)} layers)"

    # -- accumulation -------------------------------------------------------
    def add(self, name: str, count: Tensor, total: Tensor, total_sq: Tensor) -> None:
        """Accumulate moments (each ``(B, G)``) for layer ``name``.

        Raises ValueError when the shape differs from what was accumulated before.
        """
        count, total, total_sq = (t.detach().to(torch.float64) for t in (count, total, total_sq))
        if name not in self.count:
            self.count[name] = count.clone()
            self.total[name] = total.clone()
            self.total_sq[name] = total_sq.clone()
            return
        if self.count[name].shape != count.shape:
            raise ValueError(
                f"GroupNorm stats for {name!r}: shape {tuple(count.shape)} does not match the "
                f"accumulated {tuple(self.count[name].shape)} (mixing batch sizes? use reduce_batch=True)"
            )
        dev = self.count[name].device
        self.count[name] += count.to(dev)
        self.total[name] += total.to(dev)
        self.total_sq[name] += total_sq.to(dev)

    def merge(self, other: "GroupNormStats") -> "GroupNormStats":
        """Add all moments of ``other`` into this object; returns self."""
        for name in other.names():
            self.add(name, other.count[name], other.total[name], other.total_sq[name])
        return self

    def reduce_batch(self) -> "GroupNormStats":
        """A new object whose moments are summed over the batch (shape ``(1, G)``)."""
        out = GroupNormStats()
        for name in self.names():
            out.add(
                name,
                self.count[name].sum(0, keepdim=True),
                self.total[name].sum(0, keepdim=True),
                self.total_sq[name].sum(0, keepdim=True),
            )
        return out

    # -- read-out -----------------------------------------------------------
    def mean_var(self, name: str) -> Tuple[Tensor, Tensor]:
        """Biased mean and variance of layer ``name``, float64, shape ``(B|1, G)``."""
        if name not in self.count:
            raise KeyError(
                f"no GroupNorm statistics recorded for layer {name!r} "
                f"(have {len(self)} layers; was the recording pass run on the same sub-network?)"
            )
        n = self.count[name].clamp_min(1.0)
        mean = self.total[name] / n
        var = (self.total_sq[name] / n - mean * mean).clamp_min(0.0)
        return mean, var

    @classmethod
    def from_mean_var(
        cls, stats: Mapping[str, Tuple[Tensor, Tensor]], count: float = 1.0
    ) -> "GroupNormStats":
        """Build from ``{name: (mean, var)}`` with mean/var of shape ``(B|1, G)``."""
        out = cls()
        for name, (mean, var) in stats.items():
            mean = mean.detach().to(torch.float64)
            var = var.detach().to(torch.float64)
            n = torch.full_like(mean, float(count))
            out.add(name, n, mean * n, (var + mean * mean) * n)
        return out

    def to(self, device: Union[str, torch.device]) -> "GroupNormStats":
        """Move all tensors to ``device`` (in place); returns self."""
        for d in (self.count, self.total, self.total_sq):
            for k in d:
                d[k] = d[k].to(device)
        return self

    def state_dict(self) -> Dict[str, Dict[str, Tensor]]:
        """Plain nested dict ``{name: {"count", "total", "total_sq"}}`` for torch.save."""
        return {
            n: {"count": self.count[n], "total": self.total[n], "total_sq": self.total_sq[n]}
            for n in self.names()
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Mapping[str, Tensor]]) -> "GroupNormStats":
        out = cls()
        for name, m in state.items():
            out.add(name, m["count"], m["total"], m["total_sq"])
        return out


@dataclass
class _StatsControl:
    """What a StatGroupNorm does inside a ``groupnorm_stats`` context."""

    use: Optional[GroupNormStats]
    record: Optional[GroupNormStats]
    reduce_batch: bool
    core: Optional[Core]


def _core_slice(frac_lo: float, frac_hi: float, size: int) -> slice:
    lo = int(math.floor(frac_lo * size + 0.5))
    hi = int(math.floor(frac_hi * size + 0.5))
    return slice(max(0, lo), min(size, hi))


class StatGroupNorm(nn.GroupNorm):
    """``GroupNorm(32, C, eps=1e-6)`` whose statistics can be recorded or overridden.

    Same parameters (``weight``, ``bias`` of shape ``(C,)``) as :class:`nn.GroupNorm`.
    Input ``B x C x H x W`` (any float dtype), output the same. Without an active
    :func:`groupnorm_stats` context the forward pass is exactly ``F.group_norm``.
    """

    def __init__(self, num_channels: int, num_groups: int = GN_GROUPS, eps: float = GN_EPS) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=True)
        self._stats_ctl: Optional[_StatsControl] = None
        self._stats_name: str = ""

    def forward(self, x: Tensor) -> Tensor:
        ctl = self._stats_ctl
        if ctl is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if ctl.record is not None:
            self._record(x, ctl)
        if ctl.use is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        mean, var = ctl.use.mean_var(self._stats_name)
        return self.normalize_with(x, mean, var)

    def moments(self, x: Tensor, core: Optional[Core] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-(batch, group) ``(count, sum, sum of squares)`` of ``x`` as float64 ``(B, G)``.

        Computed from a float32 mean/variance of the (optionally ``core``-cropped)
        input, which keeps the second moment accurate for large tensors.
        """
        if core is not None:
            h, w = x.shape[-2], x.shape[-1]
            x = x[..., _core_slice(core[0], core[1], h), _core_slice(core[2], core[3], w)]
        b = x.shape[0]
        xg = x.detach().reshape(b, self.num_groups, -1).float()
        n = xg.shape[-1]
        var, mean = torch.var_mean(xg, dim=-1, correction=0)
        mean = mean.double()
        count = torch.full_like(mean, float(n))
        return count, mean * n, (var.double() + mean * mean) * n

    def _record(self, x: Tensor, ctl: _StatsControl) -> None:
        count, total, total_sq = self.moments(x, ctl.core)
        if ctl.reduce_batch:
            count, total, total_sq = (t.sum(0, keepdim=True) for t in (count, total, total_sq))
        assert ctl.record is not None
        ctl.record.add(self._stats_name, count, total, total_sq)

    def normalize_with(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        """Group-normalise ``x`` with given ``mean``/``var`` of shape ``(B|1, G)``, then affine.

        Computed as ``(x - mean) * scale + bias`` with a per-(batch, channel)
        ``scale = weight / sqrt(var + eps)``; subtracting the mean first keeps
        half-precision inputs accurate (no cancellation between large terms).
        """
        b = x.shape[0]
        if mean.shape[-1] != self.num_groups or mean.shape[0] not in (1, b):
            raise ValueError(
                f"GroupNorm stats for {self._stats_name!r} have shape {tuple(mean.shape)}, "
                f"expected (1 or {b}, {self.num_groups})"
            )
        centre, scale, shift = self.affine_terms(mean, var, x.device)
        return torch.addcmul(shift.to(x.dtype), x - centre.to(x.dtype), scale.to(x.dtype))

    def affine_terms(self, mean: Tensor, var: Tensor, device) -> Tuple[Tensor, Tensor, Tensor]:
        """Float32 per-channel ``(centre, scale, shift)`` such that the normalised output
        is ``(x - centre) * scale + shift``: shapes ``(B|1, C, 1, 1)`` twice, then
        ``(1, C, 1, 1)``."""
        c, g = self.num_channels, self.num_groups
        mean = mean.to(device=device, dtype=torch.float32)
        rstd = torch.rsqrt(var.to(device=device, dtype=torch.float32) + self.eps)
        nb = mean.shape[0]
        scale = (self.weight.float().view(1, g, c // g) * rstd[..., None]).reshape(nb, c, 1, 1)
        centre = mean[..., None].expand(nb, g, c // g).reshape(nb, c, 1, 1)
        return centre, scale, self.bias.float().reshape(1, c, 1, 1)


@contextlib.contextmanager
def groupnorm_stats(
    module: nn.Module,
    mode: str = "record",
    stats: Optional[GroupNormStats] = None,
    *,
    into: Optional[GroupNormStats] = None,
    reduce_batch: bool = False,
    core: Optional[Sequence[float]] = None,
) -> Iterator[GroupNormStats]:
    """Record or override the statistics of every :class:`StatGroupNorm` in ``module``.

    Args:
        module: any module; its StatGroupNorm layers are keyed by qualified name
            relative to ``module``.
        mode: ``"record"`` (normalise as usual, accumulate input moments into
            ``stats`` or a new object), ``"use"`` (normalise with ``stats``) or
            ``"refine"`` (normalise with ``stats`` and record into ``into`` or a new
            object).
        stats: statistics to record into ("record") or to normalise with ("use",
            "refine"; required).
        into: destination of "refine" recordings.
        reduce_batch: sum recorded moments over the batch dimension.
        core: ``(top, bottom, left, right)`` fractions in [0, 1] of the spatial extent
            that count when recording.

    Yields:
        The :class:`GroupNormStats` being recorded into ("record", "refine") or the
        one being used ("use"). The previous state of every layer is restored on exit.
    """
    if mode == "record":
        rec = stats if stats is not None else GroupNormStats()
        use = None
        out = rec
    elif mode in ("use", "refine"):
        if stats is None:
            raise ValueError(f"groupnorm_stats(mode={mode!r}) needs stats")
        use = stats
        rec = (into if into is not None else GroupNormStats()) if mode == "refine" else None
        out = rec if rec is not None else use
    else:
        raise ValueError(f"unknown groupnorm_stats mode {mode!r} (record, use, refine)")
    core_t: Optional[Core] = None
    if core is not None:
        if len(core) != 4:
            raise ValueError("core must be (top, bottom, left, right) fractions")
        top, bottom, left, right = (float(v) for v in core)
        if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
            raise ValueError(f"core fractions out of range: {core}")
        core_t = (top, bottom, left, right)
    ctl = _StatsControl(use=use, record=rec, reduce_batch=reduce_batch, core=core_t)
    saved = []
    for name, m in module.named_modules():
        if isinstance(m, StatGroupNorm):
            saved.append((m, m._stats_ctl, m._stats_name))
            m._stats_ctl = ctl
            m._stats_name = name
    try:
        yield out
    finally:
        for m, prev_ctl, prev_name in saved:
            m._stats_ctl = prev_ctl
            m._stats_name = prev_name
