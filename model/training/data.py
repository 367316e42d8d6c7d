"""Training data: image lists, random GT crops and degraded (GT, LQ) batches.

A data source is a folder (searched recursively), a text file with one image path
per line (relative paths are relative to the text file; ``#`` starts a comment), a
single image, a named set of wheel-shipped photos (``pypi-samples``, see
``sample_images``), or procedural images (``dead-leaves[:N]``, see ``dead_leaves``).
Images smaller than the crop are reflect-padded (``small_images: pad``) or left out
(``skip``); both are counted and reported.

Batches are a pure function of (seed, step, micro-batch, rank): the generator for each
is ``numpy.random.default_rng([seed, step, micro, rank])``. Resuming at step k therefore
sees exactly the batches an uninterrupted run sees, with no loader state to save.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..degradations import Degradation
from ..degradations.ops import hflip, resize
from ..errors import ModelError
from ..imageio import decode_image
from . import dead_leaves
from .sample_images import SOURCES, sample_images

log = logging.getLogger("resshift.train")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
SmallPolicy = Literal["pad", "skip"]


class DataError(ModelError):
    """The training data cannot be used (nothing found, unreadable list...)."""


@dataclass
class ImageEntry:
    path: Path
    width: int
    height: int
    provenance: dict = field(default_factory=dict)
    render: Optional[Callable[[], np.ndarray]] = None   # procedural: HxWx3 [0, 1] float32


def _from_text_file(path: Path) -> list[Path]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def _procedural_count(source: str) -> Optional[int]:
    """Images a procedural source (``dead-leaves[:N]``) names; None for other sources."""
    try:
        return dead_leaves.parse_source(source)
    except ValueError as e:
        raise DataError(str(e)) from None


def _procedural(source: str) -> list[ImageEntry]:
    """The entries of a procedural source (``dead-leaves[:N]``), rendered when first used."""
    def renderer(i: int) -> Callable[[], np.ndarray]:
        return lambda: dead_leaves.render(i)
    count = _procedural_count(source) or 0
    side = dead_leaves.SIZE
    return [ImageEntry(Path(f"{dead_leaves.SOURCE}/{i:04d}"), side, side,
                       dead_leaves.provenance(i), renderer(i)) for i in range(count)]


def list_sources(sources: Sequence[str]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Expand file-backed data sources into (image path, provenance) pairs plus notes."""
    found: list[tuple[Path, dict]] = []
    notes: list[str] = []
    for source in sources:
        text = str(source)
        if _procedural_count(text) is not None:
            continue  # procedural: ImagePool adds its entries
        if text in SOURCES:
            images, missing = sample_images(text)
            notes += missing
            found += [(im.path, im.provenance()) for im in images]
            continue
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file() and path.suffix.lower() == ".txt":
            files = _from_text_file(path)
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"data source {text!r} is neither a folder, a .txt list, an image "
                            f"nor one of {sorted(SOURCES) + [dead_leaves.SOURCE + '[:N]']}")
        found += [(f, {"file": str(f)}) for f in files]
    return found, notes


@dataclass
class DataStats:
    found: int = 0
    used: int = 0
    padded: int = 0
    skipped_small: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class ImagePool:
    """The usable images of some sources, with small/unreadable ones handled.

    ``min_side``: the crop side; smaller images are padded or skipped per ``small``.
    Decoded images are cached in memory when there are at most ``cache_limit``.
    """

    def __init__(self, sources: Sequence[str], min_side: int, small: SmallPolicy = "pad",
                 cache_limit: int = 512):
        if small not in ("pad", "skip"):
            raise DataError(f"small_images must be 'pad' or 'skip', got {small!r}")
        self.stats = DataStats()
        self.entries: list[ImageEntry] = []
        notes: list[str] = []
        for source in sources:  # entries keep the order of the sources (val takes the first)
            if _procedural_count(str(source)) is not None:
                candidates = _procedural(str(source))
            else:
                files, missing = list_sources([source])
                notes += missing
                candidates = []
                for path, prov in files:
                    try:
                        with Image.open(path) as im:
                            w, h = im.size
                    except (OSError, ValueError):
                        self.stats.unreadable += 1
                        log.warning("unreadable image left out: %s", path)
                        continue
                    candidates.append(ImageEntry(Path(path), w, h, prov))
            self.stats.found += len(candidates)
            for entry in candidates:
                if min(entry.width, entry.height) < min_side:
                    if small == "skip":
                        self.stats.skipped_small += 1
                        continue
                    self.stats.padded += 1
                self.entries.append(entry)
        for note in notes:
            log.warning("%s", note)
        self.stats.found += self.stats.unreadable
        self.stats.used = len(self.entries)
        if not self.entries:
            raise DataError(f"no usable training images in {list(sources)} ({self.stats.as_dict()}"
                            + (f"; {'; '.join(notes)}" if notes else "") + ")")
        self.min_side = min_side
        self._cache: Optional[dict[int, np.ndarray]] = {} if len(self.entries) <= cache_limit else None

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, index: int) -> np.ndarray:
        """HxWx3 float32 in [0, 1], padded by reflection to at least ``min_side``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        entry = self.entries[index]
        if entry.render is not None:
            img = pad_to_min_side(entry.render(), self.min_side)
        else:
            pixels = decode_image(entry.path, max_pixels=64_000_000).pixels
            img = pad_to_min_side(pixels.astype(np.float32) / 255.0, self.min_side)
        if self._cache is not None:
            self._cache[index] = img
        return img

    def provenance(self) -> list[dict]:
        return [e.provenance for e in self.entries]


def pad_to_min_side(img: np.ndarray, side: int) -> np.ndarray:
    """Reflect-pad on the bottom/right so both sides are at least ``side``."""
    h, w = img.shape[:2]
    ph, pw = max(0, side - h), max(0, side - w)
    if ph == 0 and pw == 0:
        return img
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                rescale_range: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A ``size`` x ``size`` crop; with rescale f ~ U(rescale_range) a square of side
    ~size/f is cut and area-resized to ``size`` (scale augmentation)."""
    h, w = img.shape[:2]
    f = float(rng.uniform(*rescale_range)) if rescale_range[0] != rescale_range[1] else rescale_range[0]
    side = int(min(h, w, max(size, round(size / f))))
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    crop = img[top:top + side, left:left + side]
    if side != size:
        crop = np.clip(resize(crop, (size, size), "area"), 0.0, 1.0)
    return np.ascontiguousarray(crop)


def to_model_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """List of HxWx3 [0, 1] arrays -> Bx3xHxW float32 in [-1, 1]."""
    arr = np.stack(images).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0


@dataclass(frozen=True)
class PairSettings:
    gt_size: int
    degradation: Degradation
    rescale_range: tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    rot90: bool = False


class PairSampler:
    """Deterministic (GT, LQ) batches: ``batch(step, micro, rank)``."""

    def __init__(self, pool: ImagePool, settings: PairSettings, batch_size: int, seed: int):
        if settings.gt_size % settings.degradation.scale:
            raise DataError(f"gt_size {settings.gt_size} is not a multiple of the "
                            f"degradation's scale {settings.degradation.scale}")
        self.pool, self.settings = pool, settings
        self.batch_size, self.seed = int(batch_size), int(seed)

    def rng(self, step: int, micro: int = 0, rank: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(step), int(micro), int(rank)])

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        img = self.pool.image(int(rng.integers(len(self.pool))))
        gt = random_crop(img, s.gt_size, rng, s.rescale_range)
        if s.hflip and rng.uniform() < 0.5:
            gt = hflip(gt)
        if s.rot90:
            gt = np.ascontiguousarray(np.rot90(gt, int(rng.integers(4))))
        lq = s.degradation(gt, rng)
        return gt, lq

    def batch(self, step: int, micro: int = 0, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(gt Bx3xHxW, lq Bx3x(H/sf)x(W/sf)), both float32 in [-1, 1]."""
        rng = self.rng(step, micro, rank)
        pairs = [self.pair(rng) for _ in range(self.batch_size)]
        return to_model_tensor([g for g, _ in pairs]), to_model_tensor([l for _, l in pairs])
