"""One restoration request as a step-by-step state machine, for batching across requests.

``Restorer.restore`` runs one image's whole chain in one call. A batching server needs
the chain cut open: after every reverse step it wants the latent tiles of *many*
requests, possibly at different timesteps, in one UNet call. ``TiledJob`` holds one
request's canvas and exposes exactly that seam::

    job = TiledJob(restorer, image, seed=7, tile=64)
    job.encode()                          # VAE encoder, noises, x_T
    while not job.done:
        work = job.pending_tiles()        # this step's latent tiles (TileWork)
        job.complete_step(run_tiles(restorer, work))   # or batched with other jobs
    image = job.finish()                  # decode, crop, paste known pixels

Every piece of arithmetic is the shared one: the tile plan and blending weights of
``model.tiling``, the noises, prior and posterior of ``model.sampler``, the padding,
encode and decode of ``Restorer``. Noise comes from the job's own seeded generator,
so a job gives the same pixels alone or batched with others; with the same seed and
tile size it gives what ``Restorer.restore`` gives (up to float reassociation in the
network when the batch composition differs).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .restorer import Restorer, TileOptions, to_device, to_uint8
from .sampler import draw_noises, posterior_step, prior_sample
from .tiling import TilePlan, plan_tiles, ramp_weights

Shape = tuple[int, ...]


@dataclass(frozen=True)
class TileWork:
    """The denoiser inputs of one latent tile at one reverse step.

    x: 1xCxhxw, x_t divided by the schedule's input scale (what the network takes).
    t: 0-based timestep index. lq / mask: the matching conditioning crops (1x3xHxW in
    [-1, 1], 1x1xHxW in [-1, 1]) or None. Tiles with equal ``key`` stack into one batch.
    """

    x: torch.Tensor
    t: int
    lq: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]

    @property
    def key(self) -> tuple[Shape, Optional[Shape], Optional[Shape]]:
        """Plain-int shapes: what must agree for tiles to share a batch."""
        def shape(z):
            return None if z is None else tuple(int(s) for s in z.shape)
        return shape(self.x), shape(self.lq), shape(self.mask)


@torch.no_grad()
def run_tiles(restorer: Restorer, work: Sequence[TileWork]) -> list[torch.Tensor]:
    """Run the restorer's denoiser once on a batch of same-key tiles (any timesteps).

    Returns one x0 prediction (1xCxhxw, float32) per tile, in order. The UNet takes a
    per-item timestep, so tiles of different requests at different steps mix freely.
    """
    if not work:
        return []
    keys = {w.key for w in work}
    if len(keys) != 1:
        raise ValueError(f"tiles of different shapes cannot share a batch: {sorted(keys, key=str)}")
    first = work[0]
    x = torch.cat([w.x for w in work])
    t = torch.tensor([w.t for w in work], dtype=torch.long, device=x.device)
    lq = torch.cat([w.lq for w in work]) if first.lq is not None else None
    mask = torch.cat([w.mask for w in work]) if first.mask is not None else None
    pred = restorer.denoiser()(x, t, lq, mask).float()
    return list(pred.split(1))


class TiledJob:
    """One request's residual-shift chain over a tiled latent canvas (see module doc).

    image: HxWx3 uint8 RGB. mask: HxW bool (True = fill), inpainting models only.
    seed: the noise seed (a random one when None; read it back from ``seed``).
    tile: latent tile side as in ``Restorer.restore`` (None default, 0 = untiled).
    Construction is cheap (validation, padding); the encoder runs in ``encode``.
    """

    def __init__(self, restorer: Restorer, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 seed: Optional[int] = None, tile: Optional[int] = None):
        prepared = restorer.prepare(image, mask)
        self.restorer = restorer
        self.height, self.width = image.shape[:2]
        self.tiles: Optional[TileOptions] = restorer.tile_options(tile)
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        self._lq, self._mask = prepared.lq, prepared.mask
        self._padded, self._mask_in = prepared.padded, prepared.padded_mask
        self._generator = torch.Generator().manual_seed(self.seed)
        self._x: Optional[torch.Tensor] = None
        self._noises: list[torch.Tensor] = []
        self._cond_lq: Optional[torch.Tensor] = None
        self._plan: Optional[TilePlan] = None
        self._step = 0                     # reverse steps taken so far

    # -- geometry ----------------------------------------------------------------------
    @property
    def plan(self) -> TilePlan:
        """Where the latent tiles sit (known before encoding: latent size is fixed)."""
        if self._plan is None:
            _, _, h, w = self.restorer.latent_shape(self._padded.shape)
            if self.tiles is None:
                self._plan = TilePlan(h, w, h, w, ((0, 0),))
            else:
                self._plan = plan_tiles(h, w, self.tiles.latent_tile, self.tiles.latent_overlap)
        return self._plan

    @property
    def tiles_per_step(self) -> int:
        return len(self.plan.boxes)

    @property
    def total_steps(self) -> int:
        """Network calls per tile: T, or 1 for single-step (distilled) models."""
        r = self.restorer
        return 1 if r.config.sampler == "single_step" else r.schedule.num_steps

    @property
    def encoded(self) -> bool:
        return self._x is not None

    @property
    def done(self) -> bool:
        return self.encoded and self._step >= self.total_steps

    def _timestep(self) -> int:
        return self.restorer.schedule.num_steps - 1 - self._step

    # -- the chain -----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self) -> None:
        """Encode the LQ image, draw the request's noises and the prior sample x_T."""
        if self.encoded:
            return
        r = self.restorer
        z_y = r.encode_lq(self._padded, self.tiles)
        # drawn on the CPU (same seed, same image on every device), moved pinned
        self._noises = [to_device(n, r.device) for n in draw_noises(
            z_y.shape, r.schedule.num_steps + 1, self._generator)]
        if r.config.unet.get("cond_lq", True):
            self._cond_lq = r._conditioning(self._padded, z_y)
        self._x = prior_sample(z_y, r.schedule, self._noises[0])

    @torch.no_grad()
    def pending_tiles(self) -> list[TileWork]:
        """This step's tiles, in plan order (empty once done)."""
        if not self.encoded:
            raise RuntimeError("call encode() before stepping")
        if self.done:
            return []
        r, t = self.restorer, self._timestep()
        normalize = bool(r.config.diffusion.get("normalize_input", True))
        scale = r.schedule.input_scale(t, r.latent) if normalize else 1.0
        x = self._x / scale
        plan = self.plan
        th, tw = plan.tile_h, plan.tile_w

        def crop(z: Optional[torch.Tensor], top: int, left: int) -> Optional[torch.Tensor]:
            if z is None:
                return None
            k = z.shape[-1] // plan.width       # conditioning is k times the latent size
            return z[..., top * k:(top + th) * k, left * k:(left + tw) * k]
        return [TileWork(crop(x, top, left), t, crop(self._cond_lq, top, left),
                         crop(self._mask_in, top, left)) for top, left in plan.boxes]

    @torch.no_grad()
    def complete_step(self, predictions: Sequence[torch.Tensor]) -> None:
        """Blend this step's x0 predictions (one per pending tile, in order) into the
        canvas and take the reverse step (posterior, or x0 itself for single-step)."""
        plan = self.plan
        if len(predictions) != len(plan.boxes):
            raise ValueError(f"expected {len(plan.boxes)} tile predictions, got {len(predictions)}")
        r, t = self.restorer, self._timestep()
        x0 = self._blend(predictions)
        if not r.latent:          # the sampler's default clip_denoised
            x0 = x0.clamp(-1.0, 1.0)
        if r.config.sampler == "single_step":
            self._x = x0
        else:
            i = self._step + 1
            noise = self._noises[i] if i < len(self._noises) else None
            self._x = posterior_step(self._x, x0, r.schedule, t, noise)
        self._step += 1

    def _blend(self, predictions: Sequence[torch.Tensor]) -> torch.Tensor:
        """Ramp-weighted average of overlapping tiles, in the order TiledDenoiser uses,
        so that equal predictions give bit-equal canvases."""
        plan, x = self.plan, self._x
        if plan.single:
            return predictions[0].to(x.device).float().to(x.dtype)
        th, tw = plan.tile_h, plan.tile_w
        weights = ramp_weights(th, tw, max(1, self.tiles.latent_overlap), x.device, torch.float32)
        out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        wsum = torch.zeros((1, 1, plan.height, plan.width), device=x.device, dtype=torch.float32)
        for pred, (top, left) in zip(predictions, plan.boxes):
            out[0, :, top:top + th, left:left + tw] += pred[0].to(x.device).float() * weights
            wsum[0, 0, top:top + th, left:left + tw] += weights
        return (out / wsum).to(x.dtype)

    @torch.no_grad()
    def finish(self) -> np.ndarray:
        """Decode x_0, crop the padding, paste known pixels back: HxWx3 -> uint8 image."""
        if not self.done:
            raise RuntimeError(f"the job has taken {self._step} of {self.total_steps} steps")
        r = self.restorer
        out = r.decode(self._x, self.tiles)[..., :self.height * r.scale, :self.width * r.scale]
        if self._mask is not None:
            # Known pixels are pasted back; only the masked area comes from the model.
            out = self._mask * out.clamp(-1, 1) + (1 - self._mask) * self._lq
        return to_uint8(out)

    def run(self) -> np.ndarray:
        """Drive this job alone to the end (what a batch of one does)."""
        self.encode()
        while not self.done:
            self.complete_step(run_tiles(self.restorer, self.pending_tiles()))
        return self.finish()


# -- either family ------------------------------------------------------------------------
def make_job(restorer, image: np.ndarray, mask: Optional[np.ndarray] = None,
             seed: Optional[int] = None, tile: Optional[int] = None):
    """A step-by-step job for a model of either family, with one protocol (``encode``,
    ``pending_tiles``, ``complete_step``, ``finish``; ``done``, ``seed``,
    ``tiles_per_step``): ``TiledJob`` for ResShift, ``model.diffir.stepper.DiffIRJob``
    for DiffIR. ``tile`` means what the family's ``restore`` takes (latent pixels for
    ResShift, LQ pixels for DiffIR)."""
    if restorer.family == "diffir":
        from .diffir.stepper import DiffIRJob
        return DiffIRJob(restorer, image, mask=mask, seed=seed, tile=tile)
    return TiledJob(restorer, image, mask=mask, seed=seed, tile=tile)


def run_batch(restorer, work: Sequence) -> list[torch.Tensor]:
    """Run one batch of same-key work items of ``restorer``'s family (see ``make_job``)."""
    if restorer.family == "diffir":
        from .diffir.stepper import run_tiles as run_diffir
        return run_diffir(restorer, work)
    return run_tiles(restorer, work)
