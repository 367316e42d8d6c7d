"""One DiffIR request cut open for a batching server, with ``TiledJob``'s protocol.

The service drives jobs of both families the same way (``restorer.make_job``, the
``model.family.ModelFamily`` interface)::

    job = DiffIRJob(restorer, image, seed=7)
    job.encode()                      # pad, the ONE prior draw, CPEN + 4 IPR steps
    while not job.done:               # one round: the DIRformer over the image's tiles
        work = job.pending_tiles()    # DiffIRWork: an LQ tile and the image's IPR
        job.complete_step(run_tiles(restorer, work))    # or batched with other jobs
    image = job.finish()              # blend, crop, uint8

What a batch shares is the DIRformer call: items of equal ``key`` (one padded LQ shape)
stack into one batch, each with its own IPR. The per-request parts (the prior draw from
the request's own seeded generator, CPEN and the tiny IPR loop) never leave the job, so
a request gives the same pixels alone or batched (up to float reassociation inside the
network when the batch size differs), and ``DiffIRRestorer.restore`` with the same seed
and tile setting gives them too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from ..errors import InputImageError
from ..tensors import pad_to_multiple, to_unit_range, unit_to_uint8
from ..tiling import TilePlan, blend
from .tiling import DiffIRTiling, crop_tiles, tiling_for

if TYPE_CHECKING:
    from .restorer import DiffIRRestorer

Shape = tuple[int, ...]


@dataclass(frozen=True)
class DiffIRWork:
    """One DIRformer input: a padded LQ tile (1x3xhxw in [0, 1]) and its image's IPR
    (1x256). Items with equal ``key`` stack into one batch."""

    lq: torch.Tensor
    ipr: torch.Tensor

    @property
    def key(self) -> tuple[str, Shape]:
        return "diffir", tuple(int(s) for s in self.lq.shape)

    @property
    def pixels(self) -> int:
        """Canvas pixels this item puts through the network (the unit of work)."""
        return int(self.lq.shape[-2] * self.lq.shape[-1])


@torch.no_grad()
def run_tiles(restorer: DiffIRRestorer, work: Sequence[DiffIRWork]) -> list[torch.Tensor]:
    """The DIRformer (on the restorer's backend, if any) on a batch of same-key items;
    one 1x3x(s*h)x(s*w) output each."""
    if not work:
        return []
    keys = {w.key for w in work}
    if len(keys) != 1:
        raise ValueError(f"DiffIR inputs of different shapes cannot share a batch: "
                         f"{sorted(keys, key=str)}")
    lq = torch.cat([w.lq for w in work]).to(restorer.device, torch.float32)
    ipr = torch.cat([w.ipr for w in work]).to(restorer.device, torch.float32)
    return list(restorer.dirformer(lq, ipr).float().split(1))


class DiffIRJob:
    """One request through a DiffIR model (see module doc).

    image: HxWx3 uint8 RGB. mask: must be None. seed: the prior draw's seed (random when
    None; read it back from ``seed``). tile: as in ``DiffIRRestorer.restore`` (LQ
    pixels; None = the default policy, 0 = whole).
    """

    total_steps = 1          # one DIRformer round; the IPR loop runs inside ``encode``

    def __init__(self, restorer: DiffIRRestorer, image: np.ndarray,
                 mask: Optional[np.ndarray] = None, seed: Optional[int] = None,
                 tile: Optional[int] = None):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputImageError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} "
                                  f"{image.shape}")
        if mask is not None:
            raise InputImageError("this DiffIR super-resolution model takes no mask")
        self.restorer = restorer
        self.height, self.width = image.shape[:2]
        self.tiles: Optional[DiffIRTiling] = tiling_for(tile, restorer.input_multiple)
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        self._padded = pad_to_multiple(to_unit_range(image, restorer.device),
                                       restorer.input_multiple)
        self.plan: TilePlan = restorer.plan(self._padded.shape[-2], self._padded.shape[-1],
                                            self.tiles)
        self._ipr: Optional[torch.Tensor] = None
        self._out: Optional[torch.Tensor] = None
        self._preds: Optional[list] = None

    @property
    def tiles_per_step(self) -> int:
        return len(self.plan.boxes)

    @property
    def steps_done(self) -> int:
        return int(self.done)

    @property
    def encoded(self) -> bool:
        return self._ipr is not None

    @property
    def done(self) -> bool:
        return self._out is not None

    @torch.no_grad()
    def encode(self) -> None:
        """The image's one prior draw (from the seed), its condition and its IPR."""
        if self.encoded:
            return
        r = self.restorer
        noise = r.draw_prior(1, torch.Generator().manual_seed(self.seed))
        self._ipr = r.sample_ipr(self._padded, noise, plan=self.plan)

    def pending_tiles(self) -> list[DiffIRWork]:
        """The DIRformer inputs of this image, in plan order (empty once done)."""
        if not self.encoded:
            raise RuntimeError("call encode() before stepping")
        if self.done:
            return []
        return [DiffIRWork(crop, self._ipr) for crop in crop_tiles(self._padded, self.plan)]

    def accept(self, index: int, prediction: torch.Tensor) -> bool:
        """Take the output of pending item ``index``; True once all of them are in."""
        if self._preds is None:
            self._preds = [None] * len(self.plan.boxes)
        self._preds[index] = prediction
        return all(p is not None for p in self._preds)

    @torch.no_grad()
    def complete_step(self, predictions: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Blend the tiles' outputs (one per pending item, in order: given here, or
        taken one by one with ``accept``) into the image."""
        if predictions is None:
            predictions, self._preds = self._preds or [], None
        if len(predictions) != len(self.plan.boxes) or any(p is None for p in predictions):
            raise ValueError(f"expected {len(self.plan.boxes)} tile outputs, got "
                             f"{len(predictions)}")
        overlap = self.tiles.overlap if self.tiles is not None else 0
        self._out = blend([p.to(self.restorer.device) for p in predictions], self.plan,
                          overlap, self.restorer.scale)

    def finish(self) -> np.ndarray:
        """Crop the padding: (s*H)x(s*W)x3 uint8."""
        if not self.done:
            raise RuntimeError("the job has not run its DIRformer round yet")
        s = self.restorer.scale
        return unit_to_uint8(self._out[..., :self.height * s, :self.width * s])

    def run(self) -> np.ndarray:
        """Drive this job alone to the end (what a batch of one does)."""
        self.encode()
        while not self.done:
            self.complete_step(run_tiles(self.restorer, self.pending_tiles()))
        return self.finish()
