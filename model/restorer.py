"""The ResShift restorer: preprocessing, tiling, the residual-shift sampler, the autoencoder.

``Restorer`` ties a configured UNet and (optional) VQGAN autoencoder to their schedule
and exposes the Python API of docs/design.md: ``unet``, ``autoencoder``, ``schedule``,
``sample`` (latent in, latent out) and ``restore`` (uint8 image in, uint8 image out).

Arbitrary sizes: the LQ image is reflect-padded on the right/bottom to the model's input
multiple (as the official sampler does) and the result cropped back. Images larger than
one latent tile are sampled tile by tile with every step blended into one canvas
(``model.tiling.TiledDenoiser``); encode and decode are tiled too, with GroupNorm
statistics estimated once over the whole image so that tiles agree in colour.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig, ModelSpec
from .denoiser import Network, X0Denoiser, module_network
from .errors import InputImageError
from .geometry import TileOptions, WorkShape, fitted_tile
from .sampler import draw_noises, sample as run_sampler, scale_noises
from .schedule import Schedule, schedule_from_config
from .stepper import TiledJob, TileWork, run_tiles
from .tensors import pad_to_multiple, to_device, to_model_range, to_uint8
from .tiling import TiledDenoiser, paste_back, plan_tiles, tile_cores, tiled_map

Progress = Callable[[str, int, int], None]   # (stage, done, total)


class Prepared(NamedTuple):
    """A request's tensors (``Restorer.prepare``): LQ and mask at the image's size, and
    padded to the input multiple (mask in [-1, 1] there); masks are None without one."""

    lq: torch.Tensor
    mask: Optional[torch.Tensor]
    padded: torch.Tensor
    padded_mask: Optional[torch.Tensor]


class Restorer:
    """One loaded ResShift model. Build with ``model.load`` or ``model.import_official``."""

    family = "resshift"
    # Where the UNet, encoder and decoder run (an ``export.backends.Backend``); None:
    # these torch modules. Set through ``using``.
    backend = None

    def __init__(self, config: ModelConfig, unet: torch.nn.Module,
                 autoencoder: Optional[torch.nn.Module], device: str | torch.device = "cpu"):
        self.config = config
        self.spec: ModelSpec = ModelSpec.from_config(config)   # the config, read once
        self.device = torch.device(device)
        if getattr(unet, "dtype", None) == torch.float16 and hasattr(unet, "convert_to_fp16"):
            # use_fp16: loading may have put float32 weights back (assign=True)
            unet.convert_to_fp16()
        self.unet = unet.to(self.device).eval()
        self.autoencoder = autoencoder.to(self.device).eval() if autoencoder is not None else None
        self.schedule: Schedule = schedule_from_config(config.diffusion)
        self.latent = self.spec.latent
        self.scale = self.spec.scale
        self.factor = self.spec.factor
        self.latent_unit = self.spec.latent_unit
        self.predict_type = self.spec.predict_type

    def using(self, backend) -> "Restorer":
        """This restorer with its networks run by ``backend`` (``export.backends``;
        None: the torch modules). A shallow copy: modules and schedule are shared, the
        original is unchanged. Tiled VAE passes always run on torch (shared GroupNorm
        statistics need the torch modules' hooks) unless the backend runs those very
        modules (``tile_encode`` / ``tile_decode``: torch autocast backends)."""
        view = copy.copy(self)
        view.backend = backend
        return view

    # -- pieces --------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self.spec.steps

    # What every model family answers (the service describes models with these).
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def needs_mask(self) -> bool:
        return self.spec.cond_mask

    @property
    def input_multiple(self) -> int:
        return self.spec.input_multiple

    # -- the model family interface (model.family.ModelFamily) ---------------------------
    def networks(self) -> dict[str, torch.nn.Module]:
        """The torch modules, the denoising network first."""
        nets = {"unet": self.unet}
        if self.autoencoder is not None:
            nets["autoencoder"] = self.autoencoder
        return nets

    def serving_tile(self, tile: Optional[int]) -> Optional[int]:
        """The service's tile setting is a latent tile side, as ``restore`` takes it."""
        return tile

    def latent_tile(self, tile: Optional[int]) -> Optional[int]:
        """The latent tile side that ``tile`` gives (None: untiled)."""
        options = self.tile_options(tile)
        return options.latent_tile if options is not None else None

    def make_job(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 seed: Optional[int] = None, tile: Optional[int] = None) -> TiledJob:
        """``restore`` cut into steps a batching server interleaves (``model.stepper``)."""
        return TiledJob(self, image, mask=mask, seed=seed, tile=tile)

    def run_batch(self, work: Sequence[TileWork]) -> list[torch.Tensor]:
        """One network call over same-shape tiles of any jobs of this model."""
        return run_tiles(self, work)

    def unet_fn(self) -> Network:
        """The UNet as ``f(x_scaled, t, lq, mask) -> output``: what the network itself
        computes, on the backend when there is one (``export.backends``)."""
        if self.backend is not None:
            return self.backend.unet_fn()
        return module_network(self.unet)

    def denoiser(self, network: Optional[Network] = None) -> X0Denoiser:
        """The UNet (or ``network``, e.g. the module being trained) as the samplers'
        denoiser: raw x_t in, x0 out (input scaling and ``predict_type`` applied, see
        ``model.denoiser``)."""
        return X0Denoiser(network or self.unet_fn(), self.schedule, latent=self.latent,
                          normalize_input=self.spec.normalize_input,
                          predict_type=self.predict_type)

    @torch.no_grad()
    def encode_lq(self, lq: torch.Tensor, tiles: Optional[TileOptions] = None,
                  progress: Optional[Progress] = None) -> torch.Tensor:
        """z_y: the LQ image (Bx3xhxw, [-1, 1]) upsampled bicubically by sf and encoded."""
        y = F.interpolate(lq, scale_factor=self.scale, mode="bicubic") if self.scale != 1 else lq
        if not self.latent:
            return y
        return self._vae(self._tile_fn("tile_encode") or self.autoencoder.encode, y,
                         1.0 / self.factor, tiles,
                         tile_px=(tiles or TileOptions()).vae_tile, align=self.factor,
                         stage="encode", progress=progress,
                         whole=self.backend.encode if self.backend is not None else None)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, tiles: Optional[TileOptions] = None,
               quantize: bool = True, progress: Optional[Progress] = None) -> torch.Tensor:
        """Latent -> image in [-1, 1] (not clamped); identity for pixel-space models."""
        if not self.latent:
            return z
        opts = tiles or TileOptions()

        tile_decode = self._tile_fn("tile_decode") or self.autoencoder.decode

        def dec(x):
            return tile_decode(x, quantize=quantize)

        def dec_backend(x):
            return self.backend.decode(x, quantize=quantize)
        return self._vae(dec, z, float(self.factor), tiles,
                         tile_px=max(1, opts.vae_tile // self.factor), align=1,
                         stage="decode", progress=progress,
                         whole=dec_backend if self.backend is not None else None)

    def _tile_fn(self, name: str):
        """The backend's per-tile VAE function when it runs this restorer's own
        autoencoder modules (where the tiled pass's GroupNorm hooks sit), else None."""
        fn = getattr(self.backend, name, None)
        if fn is None or getattr(self.backend, "autoencoder", None) is not self.autoencoder:
            return None
        return fn

    def _vae(self, fn, x: torch.Tensor, scale: float, tiles: Optional[TileOptions],
             tile_px: int, align: int, stage: str = "vae",
             progress: Optional[Progress] = None, whole=None) -> torch.Tensor:
        """Run an encoder/decoder whole, or tiled with image-wide GroupNorm statistics.

        fn: the torch module's function; whole: the backend's, used for whole images
        only (the tiled pass hooks the torch modules' GroupNorms)."""
        if tiles is None or plan_tiles(x.shape[-2], x.shape[-1], tile_px, 0).single:
            return (whole or fn)(x)
        banded = self._banded_context(x, scale, tiles, stage)
        if banded is not None:
            if progress is not None:
                progress(stage, 0, 1)
            with banded:
                out = fn(x)
            if progress is not None:
                progress(stage, 1, 1)
            return out
        if x.shape[0] > 1:      # statistics are per image: one image at a time
            return torch.cat([self._vae(fn, x[i:i + 1], scale, tiles, tile_px, align, stage,
                                        progress, whole) for i in range(x.shape[0])])
        overlap = tiles.vae_overlap if scale < 1 else max(1, tiles.vae_overlap // self.factor)
        overlap = (overlap // align) * align
        # as many tiles as the largest tile side needs, each no larger than the cover
        # needs (the VAE tiles have no fixed shape to keep, unlike the UNet's)
        tile_px = max(fitted_tile(n, tile_px, overlap, align) for n in x.shape[-2:])
        with self._shared_norm_stats(fn, x, tile_px, overlap, align, stage, progress):
            report = (lambda done, total: progress(stage, done, total)) if progress else None
            return tiled_map(fn, x, tile_px, overlap, scale, tiles.max_batch, align,
                             progress=report)

    def _banded_context(self, x: torch.Tensor, scale: float, tiles: TileOptions, stage: str):
        """``autoencoder.banded(...)`` when a whole-image pass over ``x`` keeps its
        full-size activations within ``tiles.vae_budget`` (float32 counted), else None."""
        ae = self.autoencoder
        if not getattr(ae, "bandable", False):
            return None
        kind = "encode" if scale < 1 else "decode"
        h, w = x.shape[-2:] if kind == "encode" else (int(x.shape[-2] * scale),
                                                       int(x.shape[-1] * scale))
        if ae.banded_peak_bytes(kind, h, w, 4, x.shape[0]) > tiles.vae_budget:
            return None
        return ae.banded(attn_window=tiles.vae_attn_window)

    @contextlib.contextmanager
    def _shared_norm_stats(self, fn, x: torch.Tensor, tile: int, overlap: int, align: int,
                           stage: str = "vae", progress: Optional[Progress] = None):
        """Two-pass tiling: first record every GroupNorm's statistics over all tiles
        (each tile counting only the part it owns), then normalise every tile with
        those shared statistics. Per-tile statistics shift colours tile by tile."""
        ae = self.autoencoder
        plan = plan_tiles(x.shape[-2], x.shape[-1], tile, overlap, align)
        stats = None
        for i, ((top, left), core) in enumerate(zip(plan.boxes, tile_cores(plan))):
            with ae.groupnorm_stats("record", stats, core=core) as stats:
                fn(x[..., top:top + plan.tile_h, left:left + plan.tile_w])
            if progress is not None:
                progress(f"{stage} statistics", i + 1, len(plan.boxes))
        with ae.groupnorm_stats("use", stats):
            yield

    # -- sampling --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, lq: torch.Tensor, mask: Optional[torch.Tensor] = None,
               noises: Optional[Sequence[torch.Tensor]] = None,
               return_trajectory: bool = False, *,
               generator: torch.Generator | Sequence[torch.Generator] | None = None,
               tiles: Optional[TileOptions] = None,
               callback=None, progress: Optional[Progress] = None,
               z_y: Optional[torch.Tensor] = None) -> torch.Tensor | list[torch.Tensor]:
        """Sample the clean latent for LQ images (Bx3xhxw in [-1, 1], padded already).

        mask: Bx1xhxw in [-1, 1], 1 = area to fill (inpainting models only).
        noises: optional T+1 tensors shaped like the latent (see ``model.sampler``), drawn
            from ``generator`` when omitted; either way scaled by ``spec.noise_scale``.
        tiles: None runs the whole latent at once; otherwise latent tiles are blended.
        z_y: the already encoded LQ (``encode_lq(lq)``), to skip encoding here.
        Returns x_0 (latent), or [x_T, ..., x_0] with ``return_trajectory``.
        """
        lq = lq.to(self.device, torch.float32)
        if self.needs_mask and mask is None:
            raise InputImageError("this inpainting model needs a mask (white = area to fill)")
        mask = mask.to(self.device, torch.float32) if mask is not None and self.needs_mask else None
        if z_y is None:
            z_y = self.encode_lq(lq, tiles, progress)
        if noises is None:
            noises = draw_noises(z_y.shape, self.schedule.num_steps + 1, generator,
                                 device=self.device)
        else:
            noises = [n.to(self.device, torch.float32) for n in noises]
        noises = scale_noises(noises, self.spec.noise_scale)
        denoiser = self.denoiser()
        if tiles is not None:
            denoiser = TiledDenoiser(denoiser, tiles.latent_tile, tiles.latent_overlap,
                                     tiles.max_batch)
        cond_lq = self.conditioning(lq, z_y) if self.spec.cond_lq else None
        return run_sampler(denoiser, z_y, self.schedule, lq=cond_lq, mask=mask, noises=noises,
                           clip_denoised=self.spec.clip_denoised, mode=self.spec.sampler,
                           return_trajectory=return_trajectory, callback=callback)

    def conditioning(self, lq: torch.Tensor, z_y: torch.Tensor) -> torch.Tensor:
        """The LQ image at the resolution the UNet takes it: ``lq_size / image_size``
        (``spec.lq_ratio``) times the latent's. That is the LQ itself for the official
        latent models; a pixel-space SR model takes it upsampled to the output size."""
        ratio = self.spec.lq_ratio
        size = (z_y.shape[-2] * ratio, z_y.shape[-1] * ratio)
        if tuple(lq.shape[-2:]) == size:
            return lq
        return F.interpolate(lq, size=size, mode="bicubic")

    def tile_options(self, tile: Optional[int]) -> Optional[TileOptions]:
        """``tile`` (latent pixels): None = default tiling, 0 = never tile."""
        if tile == 0:
            return None
        side = TileOptions().latent_tile if tile is None else int(tile)
        if side <= 0 or side % self.latent_unit:
            raise InputImageError(f"tile must be a positive multiple of {self.latent_unit} "
                                  f"latent pixels, got {tile}")
        return TileOptions(latent_tile=side, latent_overlap=max(8, side // 4),
                           vae_tile=max(512, side * self.factor))

    def work_shape(self, tile: Optional[int] = None) -> WorkShape:
        """How ``restore(..., tile=tile)`` (and ``TiledJob``) cut an image into UNet calls."""
        opts = self.tile_options(tile)
        return WorkShape(self.input_multiple, self.scale, self.factor,
                         opts.latent_tile if opts else 0, opts.latent_overlap if opts else 0,
                         self.spec.steps, self.scale)

    def prepare(self, image: np.ndarray, mask: Optional[np.ndarray] = None) -> "Prepared":
        """Check and convert a request's pixels: the LQ in [-1, 1], the mask (1 = fill),
        and both padded to the input multiple (the mask in the sampler's [-1, 1]). Used by
        ``restore`` and by the service's step-by-step ``TiledJob``."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputImageError(f"expected an HxWx3 uint8 RGB array, got {image.dtype} "
                                  f"{image.shape}")
        h, w = image.shape[:2]
        lq = to_model_range(image, self.device)
        mask_t = None
        if self.needs_mask:
            if mask is None:
                raise InputImageError("this inpainting model needs a mask (white = area to fill)")
            if mask.shape != (h, w):
                raise InputImageError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the "
                                      f"image is {w}x{h}; send a mask of the image's size")
            mask_t = to_device(torch.from_numpy(mask.astype(np.float32))[None, None],
                               self.device)
        padded = pad_to_multiple(lq, self.input_multiple)
        mask_pad = pad_to_multiple(mask_t, self.input_multiple) * 2 - 1 \
            if mask_t is not None else None
        return Prepared(lq, mask_t, padded, mask_pad)

    @torch.no_grad()
    def restore(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                seed: Optional[int] = None, tile: Optional[int] = None,
                progress: Optional[Progress] = None) -> np.ndarray:
        """Restore an HxWx3 uint8 RGB image end to end; returns (sf*H)x(sf*W)x3 uint8.

        mask: HxW bool (True = fill), required by inpainting models. seed: the noise
        seed (random when None). tile: latent tile side (None default, 0 = untiled).
        """
        lq, mask_t, padded, mask_pad = self.prepare(image, mask)
        h, w = image.shape[:2]
        tiles = self.tile_options(tile)
        generator = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.seed() % 2**63))

        def on_step(i, t, x, x0):
            if progress is not None:
                progress("denoise", i, self.steps)
        z0 = self.sample(padded, mask_pad, generator=generator, tiles=tiles, callback=on_step,
                         progress=progress)
        out = self.decode(z0, tiles, progress=progress)[..., :h * self.scale, :w * self.scale]
        if mask_t is not None:
            out = paste_back(out, lq, mask_t)
        return to_uint8(out)
