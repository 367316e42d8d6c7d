"""One restoration request as a step-by-step state machine, for batching across requests.

``Restorer.restore`` runs one image's whole chain in one call. A batching server needs
the chain cut open: after every reverse step it wants the latent tiles of *many*
requests, possibly at different timesteps, in one UNet call. ``TiledJob`` holds one
request's canvas and exposes exactly that seam::

    job = restorer.make_job(image, seed=7, tile=64)     # a TiledJob
    job.encode()                          # VAE encoder, noises, x_T
    while not job.done:
        work = job.pending_tiles()        # this step's latent tiles (TileWork)
        job.complete_step(run_tiles(restorer, work))   # or batched with other jobs
    image = job.finish()                  # decode, crop, paste known pixels

Every piece of arithmetic is the shared one: the tile plan, blending and paste-back of
``model.tiling``, the noises, prior and reverse ``step`` of ``model.sampler``, the
denoiser, padding, encode and decode of ``Restorer``. Noise comes from the job's own
seeded generator, so a job draws the same noise alone or batched with others. With the same seed and
tile size, ``run`` gives what ``Restorer.restore`` gives bit for bit; batched with
other requests, the same up to float reassociation in the network (a different batch
composition may change a product's summation order).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import TileOptions
from .sampler import draw_noises, step
from .tensors import to_device, to_uint8
from .tiling import TileBlender, TilePlan, paste_back

if TYPE_CHECKING:
    from .restorer import Restorer

Shape = tuple[int, ...]


@dataclass(eq=False)
class TileWork:
    """The denoiser inputs of one latent tile at one reverse step.

    x: 1xCxhxw, the tile of the raw canvas x_t (the denoiser scales it for the network).
    t: 0-based timestep index. lq / mask: the matching conditioning crops (1x3xHxW in
    [-1, 1], 1x1xHxW in [-1, 1]) or None. Tiles with equal ``key`` stack into one batch.

    A job's tiles are cut lazily (``source``, with their ``shapes`` known up front): a
    queued tile holds no tensor until its batch runs, so a step of thousands of tiles
    costs no memory beyond the canvas.
    """

    x: Optional[torch.Tensor]
    t: int
    lq: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]
    source: Optional[Callable[[], tuple]] = None
    shapes: Optional[tuple] = None

    def tensors(self) -> tuple:
        """(x, lq, mask), cut now when the tile is lazy (and not kept: a tile that ran
        holds no memory)."""
        if self.source is not None:
            return self.source()
        return self.x, self.lq, self.mask

    @property
    def key(self) -> tuple[Shape, Optional[Shape], Optional[Shape]]:
        """Plain-int shapes: what must agree for tiles to share a batch."""
        if self.shapes is not None:
            return self.shapes

        def shape(z):
            return None if z is None else tuple(int(s) for s in z.shape)
        return shape(self.x), shape(self.lq), shape(self.mask)

    @property
    def pixels(self) -> int:
        """Canvas pixels this tile puts through the network (the unit of work)."""
        x_shape = self.key[0]
        return int(x_shape[-2] * x_shape[-1])


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
    parts = [w.tensors() for w in work]
    x = torch.cat([p[0] for p in parts])
    t = torch.tensor([w.t for w in work], dtype=torch.long)   # the denoiser moves it
    lq = torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None
    mask = torch.cat([p[2] for p in parts]) if parts[0][2] is not None else None
    del parts
    pred = restorer.denoiser()(x, t, lq, mask).float()
    return list(pred.split(1))


class _LazyCondition:
    """The UNet's LQ conditioning, cut per tile.

    The padded LQ itself where it already has the size the UNet takes (official latent
    models); else (pixel-space SR) its bicubic upsampling to the canvas, computed for
    each tile over a window of the LQ a few pixels wider than the tile needs. For a
    power-of-two factor that gives exactly the values of upsampling the whole image
    (the same source pixels, weights and clamping at the image border), without ever
    holding a full-size copy. Other factors upsample the whole image once.
    """

    def __init__(self, restorer: Restorer, lq: torch.Tensor, z_y: torch.Tensor):
        self.ratio = restorer.spec.lq_ratio
        size = (int(z_y.shape[-2]) * self.ratio, int(z_y.shape[-1]) * self.ratio)
        self.channels = int(lq.shape[1])
        self.lq, self.full, self.factor = lq, None, 0
        h, w = lq.shape[-2:]
        f = size[0] // h
        if tuple(lq.shape[-2:]) == size:
            self.full = lq
        elif size == (f * h, f * w) and f & (f - 1) == 0:
            self.factor = f
        else:
            self.full = restorer.conditioning(lq, z_y)

    def crop(self, top: int, left: int, th: int, tw: int) -> torch.Tensor:
        k = self.ratio
        r0, r1, c0, c1 = top * k, (top + th) * k, left * k, (left + tw) * k
        if self.full is not None:
            return self.full[..., r0:r1, c0:c1]
        f, (h, w) = self.factor, self.lq.shape[-2:]
        # bicubic taps reach 2 source pixels each way: 3 more keep the window's own
        # border clamping away from every output pixel we keep
        a, b = max(0, r0 // f - 3), min(h, (r1 - 1) // f + 4)
        cl, cr = max(0, c0 // f - 3), min(w, (c1 - 1) // f + 4)
        up = F.interpolate(self.lq[..., a:b, cl:cr], size=((b - a) * f, (cr - cl) * f),
                           mode="bicubic")
        return up[..., r0 - a * f:r1 - a * f, c0 - cl * f:c1 - cl * f]


def to_uint8_banded(x: torch.Tensor, rows: int = 256) -> np.ndarray:
    """``to_uint8`` a band of rows at a time on the CPU: the same pixels without the
    full-size float temporaries of converting a large image at once."""
    _, _, h, w = x.shape
    if x.device.type != "cpu" or h * w <= rows * rows * 16:
        return to_uint8(x)
    out = np.empty((h, w, 3), np.uint8)
    for r in range(0, h, rows):
        out[r:r + rows] = to_uint8(x[..., r:r + rows, :])
    return out


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
        self._work = restorer.work_shape(tile)
        self.seed = int(seed) if seed is not None else secrets.randbits(63)
        self._lq, self._mask = prepared.lq, prepared.mask
        self._padded, self._mask_in = prepared.padded, prepared.padded_mask
        self._generator = torch.Generator().manual_seed(self.seed)
        self._x: Optional[torch.Tensor] = None
        self._encoded = False
        self._shape: tuple[int, ...] = ()
        self._cond_lq: Optional[_LazyCondition] = None
        self._plan: Optional[TilePlan] = None
        self._step = 0                     # reverse steps taken so far
        # this step's blend (one accumulator for every step); predictions that came early
        self._blender: Optional[TileBlender] = None
        self._early: dict[int, torch.Tensor] = {}
        self._next = 0

    # -- geometry ----------------------------------------------------------------------
    @property
    def plan(self) -> TilePlan:
        """Where the latent tiles sit (known before encoding: latent size is fixed)."""
        if self._plan is None:
            self._plan = self._work.plan(self.height, self.width)
        return self._plan

    @property
    def tiles_per_step(self) -> int:
        return len(self.plan.boxes)

    @property
    def total_steps(self) -> int:
        """Network calls per tile: T, or 1 for single-step (distilled) models."""
        return self._work.steps

    @property
    def encoded(self) -> bool:
        return self._encoded

    @property
    def done(self) -> bool:
        return self.encoded and self._step >= self.total_steps

    def _timestep(self) -> int:
        return self.restorer.schedule.num_steps - 1 - self._step

    @property
    def steps_done(self) -> int:
        return self._step

    # -- the chain -----------------------------------------------------------------------
    # Memory: a job holds the canvas x_t, one float32 accumulator (plus its 1-channel
    # weight sum) and the padded LQ; noises are drawn when a step needs them, tiles are
    # cut when their batch runs, predictions are blended as they arrive, and the step
    # and the final conversion work in place or in row bands. That keeps a max-size
    # pixel-space request near three canvases. Every operation is the one
    # ``Restorer.restore`` does, in the same order, so the pixels are the same.
    @torch.no_grad()
    def encode(self) -> None:
        """Encode the LQ image, draw the prior noise and the prior sample x_T."""
        if self.encoded:
            return
        r = self.restorer
        z_y = r.encode_lq(self._padded, self.tiles)
        self._shape = tuple(z_y.shape)
        if r.spec.cond_lq:
            self._cond_lq = _LazyCondition(r, self._padded, z_y)
        noise = self._draw_noise()
        # x_T = y + std * noise, computed in the noise's buffer (same rounding)
        self._x = noise.mul_(r.schedule.prior_std()).add_(z_y)
        self._encoded = True

    def _draw_noise(self, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The request's next noise tensor (CPU float32 from its generator, so every
        device gives the same image; scaled by the model's ``noise_scale``), drawn into
        ``out`` when given."""
        device, scale = self.restorer.device, self.restorer.spec.noise_scale
        if out is not None and out.device.type == "cpu" and out.dtype == torch.float32:
            noise = torch.randn(self._shape, generator=self._generator, out=out)
        else:
            noise = draw_noises(self._shape, 1, self._generator)[0]
            noise = out.copy_(noise) if out is not None else to_device(noise, device)
        # the multiplication ``Restorer.sample`` does, so the pixels stay the same
        return noise.mul_(scale) if scale != 1.0 else noise

    @torch.no_grad()
    def pending_tiles(self) -> list[TileWork]:
        """This step's tiles, in plan order (empty once done); each is cut from the
        canvas only when its batch runs."""
        if not self.encoded:
            raise RuntimeError("call encode() before stepping")
        if self.done:
            return []
        t, plan = self._timestep(), self.plan
        th, tw = plan.tile_h, plan.tile_w
        c = self._shape[1]
        cond, mask = self._cond_lq, self._mask_in

        def shapes():
            k_c = cond.ratio if cond is not None else 1
            k_m = mask.shape[-1] // plan.width if mask is not None else 1
            return ((1, c, th, tw),
                    (1, cond.channels, th * k_c, tw * k_c) if cond is not None else None,
                    (1, mask.shape[1], th * k_m, tw * k_m) if mask is not None else None)
        key = shapes()

        def cut(top: int, left: int):
            x = self._x[..., top:top + th, left:left + tw]
            lq = cond.crop(top, left, th, tw) if cond is not None else None
            m = None
            if mask is not None:
                k = mask.shape[-1] // plan.width
                m = mask[..., top * k:(top + th) * k, left * k:(left + tw) * k]
            return x, lq, m
        return [TileWork(None, t, None, None, source=lambda tl=top, lf=left: cut(tl, lf),
                         shapes=key) for top, left in plan.boxes]

    # -- predictions in, one step out ----------------------------------------------------
    @torch.no_grad()
    def accept(self, index: int, prediction: torch.Tensor) -> bool:
        """Take the x0 prediction of pending tile ``index``; True once the step has all
        of them. They are blended as they come, in plan order (a tile that arrives
        early waits for those before it), so the sums are the ones a whole step makes."""
        self._early[index] = prediction
        while self._next in self._early:
            self._blend_one(self._next, self._early.pop(self._next))
            self._next += 1
        return self._next == len(self.plan.boxes)

    def _blend_one(self, index: int, pred: torch.Tensor) -> None:
        if self._blender is None:
            overlap = self.tiles.latent_overlap if self.tiles is not None else 0
            self._blender = TileBlender(self.plan, overlap, device=self._x.device)
        self._blender.add(index, pred)

    @torch.no_grad()
    def complete_step(self, predictions: Optional[Sequence[torch.Tensor]] = None) -> None:
        """Take the reverse step once every tile's x0 prediction is in (``accept``, or
        all of them here, in plan order): posterior, or x0 itself for single-step."""
        plan = self.plan
        if predictions is not None:
            if len(predictions) != len(plan.boxes):
                raise ValueError(f"expected {len(plan.boxes)} tile predictions, got "
                                 f"{len(predictions)}")
            for i, pred in enumerate(predictions):
                self.accept(i, pred)
        if self._next != len(plan.boxes):
            raise RuntimeError(f"{len(plan.boxes) - self._next} tile predictions of this "
                               "step are missing")
        r, t = self.restorer, self._timestep()
        x0 = self._blender.result(inplace=True)
        # in place: x0's memory takes the step's noise, then is the next accumulator
        self._x = step(r.schedule, t, self._x, x0, self._draw_noise, clip=r.spec.clip_denoised,
                       mode=r.spec.sampler, inplace=True)
        self._next, self._early = 0, {}
        self._step += 1
        if self.done or self._x is x0:      # single-step: the prediction is the result
            self._blender = None
        else:
            self._blender.reset()

    @torch.no_grad()
    def finish(self) -> np.ndarray:
        """Decode x_0, crop the padding, paste known pixels back: HxWx3 -> uint8 image."""
        if not self.done:
            raise RuntimeError(f"the job has taken {self._step} of {self.total_steps} steps")
        r = self.restorer
        out = r.decode(self._x, self.tiles)[..., :self.height * r.scale, :self.width * r.scale]
        self._x = None
        if self._mask is not None:
            out = paste_back(out, self._lq, self._mask)
        return to_uint8_banded(out)

    def run(self) -> np.ndarray:
        """Drive this job alone to the end: ``Restorer.restore``'s pixels, bit for bit.

        Tiles go through the network in groups of the tile options' ``max_batch``, in
        plan order, as ``restore`` sends them. The grouping matters: a matrix product's
        summation order may depend on how many rows it gets (the CPU's GEMM picks its
        blocking by size), so one batch of twelve tiles and three of four can differ in
        the last bit, and a last bit can round a pixel the other way."""
        self.encode()
        group = self.tiles.max_batch if self.tiles is not None else 1
        while not self.done:
            work = self.pending_tiles()
            predictions: list[torch.Tensor] = []
            for i in range(0, len(work), group):
                predictions += run_tiles(self.restorer, work[i:i + group])
            self.complete_step(predictions)
        return self.finish()
