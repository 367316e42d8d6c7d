"""The DiffIR S2 restorer: prior draw, IPR diffusion, DIRformer, padding and cropping.

Official inference (``DiffIRS2`` in eval mode), which ``sample`` reproduces:

1. reflect-pad the LQ (RGB in [0, 1]) on the right/bottom to ``input_multiple``;
2. condition = CPEN_S2(padded LQ);
3. one Gaussian draw x_T (B, 256), then T posterior-mean steps (``sampler.sample_ipr``);
4. SR = DIRformer(padded LQ, IPR), cropped to scale x the unpadded size.

The output is not clamped; ``restore`` clamps when converting to uint8. Large inputs
run the DIRformer on blended tiles with one prior draw and one IPR per image
(``model.diffir.tiling``); ``sample`` does so only when given a tiling policy.

``using(backend)`` runs the networks elsewhere (``export.diffir_backend``): whole images
through the backend's ``forward(lq, noise)`` (the one exported graph), tiles through its
``dirformer(lq, ipr)`` while CPEN and the IPR loop stay on torch, so every tile keeps
the image's one IPR.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import ConfigError, InputImageError
from ..tensors import pad_to_multiple, to_unit_range, unit_to_uint8
from ..geometry import WorkShape
from ..tiling import TilePlan, blend
from .config import IPR_WIDTH, DiffIRConfig
from .network import DiffIRS2Net
from .sampler import StepCallback, sample_ipr
from .schedule import IPRSchedule
from .stepper import DiffIRJob, DiffIRWork, run_tiles
from .tiling import (DiffIRTiling, condition_halo, crop_tiles, tiled_condition, tiling_for,
                     whole)

Progress = Callable[[str, int, int], None]   # (stage, done, total)


class DiffIRRestorer:
    """One loaded DiffIR S2 model. Build with ``model.import_diffir`` or ``model.load``.

    ``name``, ``description``, ``provenance`` and ``metrics`` are the model directory's
    descriptive fields (model.json); the network's arguments are ``config``.
    """

    family = "diffir"
    # Where the networks run (``export.diffir_backend.DiffIROnnxBackend``: ``forward``
    # and ``dirformer``); None: the torch modules. Set through ``using``.
    backend = None

    def __init__(self, config: DiffIRConfig, network: DiffIRS2Net, schedule: IPRSchedule,
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.schedule = schedule
        self.scale = config.scale
        self.input_multiple = config.input_multiple
        self.name = "custom"
        self.description = ""
        self.provenance: dict = {}
        self.metrics: dict = {}

    def using(self, backend) -> "DiffIRRestorer":
        """This restorer with its networks run by ``backend`` (None or a float32 torch
        backend: the torch modules). A shallow copy sharing network and schedule; the
        original is unchanged. Raises ConfigError for a backend with no DiffIR runner."""
        if backend is not None and not hasattr(backend, "dirformer"):
            if (getattr(backend, "name", None) != "torch"
                    or getattr(backend, "precision", "fp32") != "fp32"):
                raise ConfigError(f"{backend.describe()} cannot run DiffIR models; use "
                                  f"--backend torch (float32) or onnxruntime")
            backend = None
        view = copy.copy(self)
        view.backend = backend
        return view

    @property
    def steps(self) -> int:
        return self.schedule.num_steps

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def needs_mask(self) -> bool:
        return False

    # -- the model family interface (model.family.ModelFamily) ---------------------------
    def networks(self) -> dict[str, torch.nn.Module]:
        return {"network": self.network}

    def serving_tile(self, tile: Optional[int]) -> Optional[int]:
        """None: the service's tile setting is a ResShift latent tile; DiffIR keeps its
        own policy (whole images up to a size, LQ tiles beyond)."""
        return None

    def latent_tile(self, tile: Optional[int]) -> Optional[int]:
        return None         # no latent space: nothing to build per tile shape

    def make_job(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 seed: Optional[int] = None, tile: Optional[int] = None) -> DiffIRJob:
        """``restore`` cut into steps a batching server interleaves (``.stepper``)."""
        return DiffIRJob(self, image, mask=mask, seed=seed, tile=tile)

    def run_batch(self, work: Sequence[DiffIRWork]) -> list[torch.Tensor]:
        """One DIRformer call over same-shape work of any jobs of this model."""
        return run_tiles(self, work)

    def work_shape(self, tile: Optional[int] = None) -> WorkShape:
        """How ``restore(..., tile=tile)`` cuts an image into DIRformer calls."""
        tiles = tiling_for(tile, self.input_multiple)
        if tiles is None:
            return WorkShape(self.input_multiple, 1, 1, 0, 0, 1, self.scale)
        return WorkShape(self.input_multiple, 1, 1, tiles.tile, tiles.overlap, 1, self.scale,
                         whole_pixels=tiles.max_whole_pixels, align=self.input_multiple)

    def plan(self, height: int, width: int, tiles: Optional[DiffIRTiling]) -> TilePlan:
        """Tile plan of a padded LQ (height, width multiples of ``input_multiple``);
        ``tiles`` None: one box, the whole image."""
        if tiles is None:
            return whole(height, width)
        return tiles.plan(height, width, self.input_multiple)

    def prior_shape(self, batch: int) -> tuple[int, int]:
        return (batch, IPR_WIDTH)

    def draw_prior(self, batch: int, generator: Optional[torch.Generator] = None
                   ) -> torch.Tensor:
        """x_T (B, 256) ~ N(0, I), drawn on the CPU so a seed means the same on any device."""
        return torch.randn(self.prior_shape(batch), generator=generator).to(self.device)

    # -- pieces --------------------------------------------------------------------
    @torch.no_grad()
    def condition(self, lq: torch.Tensor, plan: Optional[TilePlan] = None) -> torch.Tensor:
        """CPEN_S2 output (B, 256) for a padded LQ (B, 3, H, W) in [0, 1].

        With a multi-tile ``plan`` it runs tile by tile (same features, bounded memory).
        """
        lq = lq.to(self.device, torch.float32)
        if plan is None or plan.single:
            return self.network.condition(lq)
        halo = condition_halo(self.config.n_encoder_res)
        return torch.cat([tiled_condition(self.network.condition, lq[i:i + 1], plan, halo)
                          for i in range(lq.shape[0])])

    @torch.no_grad()
    def sample_ipr(self, lq: torch.Tensor, noise: torch.Tensor,
                   return_trajectory: bool = False,
                   callback: Optional[StepCallback] = None,
                   plan: Optional[TilePlan] = None) -> torch.Tensor | list[torch.Tensor]:
        """The IPR (B, 256) for a padded LQ, from the prior draw ``noise`` (B, 256)."""
        cond = self.condition(lq, plan)
        return sample_ipr(self.network.denoise, cond, noise.to(self.device, torch.float32),
                          self.schedule, callback=callback, return_trajectory=return_trajectory)

    @torch.no_grad()
    def dirformer(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        """The DIRformer on padded LQ tiles (B, 3, h, w) with their IPRs (B, 256), on
        the backend when there is one: (B, 3, s*h, s*w), unclamped."""
        if self.backend is not None:
            return self.backend.dirformer(lq, ipr)
        return self.network.G(lq, ipr)

    # -- sampling --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, lq: torch.Tensor, noise: Optional[torch.Tensor] = None, *,
               generator: Optional[torch.Generator] = None,
               callback: Optional[StepCallback] = None,
               tiles: Optional[DiffIRTiling] = None,
               progress: Optional[Progress] = None) -> torch.Tensor:
        """SR for LQ images (B, 3, h, w) in [0, 1], any size: (B, 3, s*h, s*w), unclamped.

        noise: the prior draw x_T (B, 256); drawn from ``generator`` when None.
        tiles: None runs whole (the official forward); a policy tiles large inputs,
        with each image's one IPR modulating all of its tiles.
        With a backend, a whole image runs as one graph (CPEN, IPR loop and DIRformer
        inside it, so ``callback`` sees no IPR steps); tiles run as on torch but for
        the DIRformer (see the module doc).
        """
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise InputImageError(f"expected a Bx3xHxW batch, got shape {tuple(lq.shape)}")
        b, _, h, w = lq.shape
        if noise is None:
            noise = self.draw_prior(b, generator)
        elif tuple(noise.shape) != self.prior_shape(b):
            raise InputImageError(f"the prior draw must have shape {self.prior_shape(b)}, "
                                  f"got {tuple(noise.shape)}")
        padded = pad_to_multiple(lq.to(self.device, torch.float32), self.input_multiple)
        plan = self.plan(padded.shape[-2], padded.shape[-1], tiles)
        if plan.single and self.backend is not None:
            out = self.backend.forward(padded, noise.to(self.device, torch.float32))
            return out[..., :h * self.scale, :w * self.scale]
        ipr = self.sample_ipr(padded, noise, callback=callback, plan=plan)
        if plan.single:
            out = self.network.G(padded, ipr)
        else:
            out = torch.cat([self._tiled(padded[i:i + 1], ipr[i:i + 1], plan, tiles.overlap,
                                         progress) for i in range(b)])
        return out[..., :h * self.scale, :w * self.scale]

    def _tiled(self, lq: torch.Tensor, ipr: torch.Tensor, plan: TilePlan, overlap: int,
               progress: Optional[Progress]) -> torch.Tensor:
        """The DIRformer over one padded image's tiles (one at a time), blended."""
        outputs = []
        for i, crop in enumerate(crop_tiles(lq, plan)):
            outputs.append(self.dirformer(crop, ipr))
            if progress is not None:
                progress("tiles", i + 1, len(plan.boxes))
        return blend(outputs, plan, overlap, self.scale)

    @torch.no_grad()
    def restore(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                seed: Optional[int] = None, tile: Optional[int] = None,
                progress: Optional[Progress] = None) -> np.ndarray:
        """Restore an HxWx3 uint8 RGB image; returns (s*H)x(s*W)x3 uint8.

        seed: seeds the ONE prior draw of the image (random when None), used for every
        tile. tile (LQ pixels): None = whole up to 256x256 padded LQ pixels, tiles of
        256 beyond (``DiffIRTiling``); 0 = always whole; N = tiles of N (a multiple of
        ``input_multiple``). ``mask`` exists for the shared restorer interface: DiffIR
        is no inpainting model.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputImageError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} "
                                  f"{image.shape}")
        if mask is not None:
            raise InputImageError("this DiffIR super-resolution model takes no mask")
        tiles = tiling_for(tile, self.input_multiple)
        generator = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.seed() % 2**63))

        def on_step(t: int, _x: torch.Tensor) -> None:
            if progress is not None:
                progress("denoise", self.steps - t, self.steps)
        out = self.sample(to_unit_range(image, self.device), generator=generator,
                          callback=on_step, tiles=tiles, progress=progress)
        return unit_to_uint8(out)
