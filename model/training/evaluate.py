"""Evaluation: (LQ, GT) pairs, a model and the bicubic baseline, PSNR/SSIM tables.

Pairs come from paired folders (matched by relative path without suffix) or from GT
images degraded on the fly with a named degradation; image ``name`` gets the generator
``default_rng([seed, crc32(name)])``, so its LQ does not depend on which other files
are in the folder. GT images are cropped to a multiple of the scale ("mod crop").
Metrics are those of ``model.metrics`` with ``crop_border`` = scale by default. The
baseline is the LQ upsampled bicubically (torch, the sampler's own y_0); for scale 1
models it is the LQ itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..degradations import Degradation
from ..degradations.ops import bicubic_upsample, to_uint8
from ..errors import InputImageError
from ..imageio import decode_image
from ..atomic import write_atomic
from ..metrics import all_metrics

log = logging.getLogger("resshift.eval")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
METRIC_KEYS = ("psnr", "ssim", "psnr_y", "ssim_y")


@dataclass
class EvalPair:
    name: str
    gt: np.ndarray          # HxWx3 uint8
    lq: np.ndarray          # (H/sf)x(W/sf)x3 uint8


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputImageError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return {str(p.relative_to(folder).with_suffix("")): p for p in files}


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def pairs_from_folders(lq_dir: Path, gt_dir: Path, scale: int,
                       limit: Optional[int] = None) -> list[EvalPair]:
    lqs, gts = _images(Path(lq_dir)), _images(Path(gt_dir))
    names = sorted(set(lqs) & set(gts))
    if not names:
        raise InputImageError(f"no images with the same names in {lq_dir} and {gt_dir}")
    pairs = []
    for name in names[:limit]:
        lq = decode_image(lqs[name]).pixels
        gt = decode_image(gts[name]).pixels
        h, w = lq.shape[0] * scale, lq.shape[1] * scale
        if gt.shape[0] < h or gt.shape[1] < w:
            raise InputImageError(f"{name}: GT {gt.shape[1]}x{gt.shape[0]} is smaller than "
                                  f"{scale} x LQ {lq.shape[1]}x{lq.shape[0]}")
        pairs.append(EvalPair(name, np.ascontiguousarray(gt[:h, :w]), lq))
    return pairs


def name_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def degrade_pair(name: str, gt: np.ndarray, degradation: Degradation, seed: int) -> EvalPair:
    gt = np.ascontiguousarray(mod_crop(gt, degradation.scale))
    lq = degradation(gt.astype(np.float32) / 255.0, name_rng(seed, name))
    return EvalPair(name, gt, to_uint8(lq))


def pairs_by_degradation(gt_dir: Path, degradation: Degradation, seed: int,
                         limit: Optional[int] = None) -> list[EvalPair]:
    gts = _images(Path(gt_dir))
    if not gts:
        raise InputImageError(f"no images in {gt_dir}")
    return [degrade_pair(name, decode_image(path).pixels, degradation, seed)
            for name, path in sorted(gts.items())[:limit]]


def baseline(lq: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return lq
    return to_uint8(bicubic_upsample(lq.astype(np.float32) / 255.0, scale))


@dataclass
class EvalReport:
    model: str
    scale: int
    crop_border: int
    setting: dict
    rows: list[dict] = field(default_factory=list)

    def mean(self, which: str) -> dict[str, float]:
        return {k: float(np.mean([r[which][k] for r in self.rows])) for k in METRIC_KEYS}

    def to_dict(self) -> dict:
        return {"model": self.model, "scale": self.scale, "crop_border": self.crop_border,
                **self.setting, "count": len(self.rows),
                "mean": {"bicubic": self.mean("bicubic"), "model": self.mean("model")},
                "images": self.rows}

    def table(self) -> str:
        head = (f"{'image':<28} | {'bicubic PSNR/SSIM (RGB)':>23} {'(Y)':>15} | "
                f"{'model PSNR/SSIM (RGB)':>21} {'(Y)':>15}")
        lines = [head, "-" * len(head)]

        def fmt(name: str, b: dict, m: dict) -> str:
            return (f"{name[-28:]:<28} | {b['psnr']:>14.2f} {b['ssim']:>8.4f} "
                    f"{b['psnr_y']:>6.2f} {b['ssim_y']:>8.4f} | {m['psnr']:>12.2f} "
                    f"{m['ssim']:>8.4f} {m['psnr_y']:>6.2f} {m['ssim_y']:>8.4f}")
        for r in self.rows:
            lines.append(fmt(r["name"], r["bicubic"], r["model"]))
        lines.append("-" * len(head))
        b, m = self.mean("bicubic"), self.mean("model")
        lines.append(fmt(f"mean of {len(self.rows)}", b, m))
        lines.append(f"model - bicubic: {m['psnr'] - b['psnr']:+.2f} dB PSNR (RGB), "
                     f"{m['psnr_y'] - b['psnr_y']:+.2f} dB (Y), "
                     f"{m['ssim'] - b['ssim']:+.4f} SSIM")
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


Restore = Callable[[np.ndarray, int], np.ndarray]     # (lq uint8, seed) -> uint8


def evaluate(restore: Restore, pairs: Sequence[EvalPair], scale: int, seed: int = 0,
             crop_border: Optional[int] = None, model_name: str = "model",
             setting: Optional[dict] = None, save_dir: Optional[Path] = None,
             progress: Optional[Callable[[int, int, str], None]] = None) -> EvalReport:
    """Restore every pair (sampler seed ``seed``) and score it and the baseline."""
    border = scale if crop_border is None else int(crop_border)
    report = EvalReport(model_name, scale, border, dict(setting or {}))
    for i, pair in enumerate(pairs):
        out = restore(pair.lq, seed)
        if out.shape != pair.gt.shape:
            raise InputImageError(f"{pair.name}: restored {out.shape} but GT is {pair.gt.shape}")
        base = baseline(pair.lq, scale)
        report.rows.append({"name": pair.name,
                            "bicubic": all_metrics(base, pair.gt, border),
                            "model": all_metrics(out, pair.gt, border)})
        if save_dir is not None:
            from ..imageio import save_image
            save_image(out, Path(save_dir) / "model" / f"{pair.name}.png")
            save_image(base, Path(save_dir) / "bicubic" / f"{pair.name}.png")
            save_image(pair.lq, Path(save_dir) / "lq" / f"{pair.name}.png")
        if progress is not None:
            progress(i + 1, len(pairs), pair.name)
    return report


def record_in_model_dir(model_path, report: EvalReport) -> Path:
    """Store the report's means in ``<model dir>/model.json`` under metrics.eval.<key>,
    key = "<gt folder>/<degradation or paired>/seed<seed>".

    Two evaluations recording into one model at once (real and clean pairs, say) each
    read, update and write model.json: the update holds an exclusive lock on the model
    directory and the file is replaced atomically, so neither loses the other's entry
    and a reader never sees half a file."""
    from ..directory import MODEL_JSON, resolve_model_dir
    folder = resolve_model_dir(model_path)
    meta_path = folder / MODEL_JSON
    s = report.setting
    gt = Path(s.get("gt", "gt"))
    where = f"{gt.parent.name}/{gt.name}" if gt.parent.name else gt.name
    key = f"{where}/{s.get('degradation', 'paired')}/seed{s.get('seed', 0)}"
    if s.get("pairs") == "folders":
        key = f"{where}/paired"
    entry = {"images": len(report.rows), "crop_border": report.crop_border,
             "tile": s.get("tile"), "seed": s.get("seed"),
             "model": report.mean("model"), "bicubic": report.mean("bicubic")}
    with _locked(folder):
        meta = json.loads(meta_path.read_text())
        meta.setdefault("metrics", {}).setdefault("eval", {})[key] = entry
        write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return meta_path


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive ``flock`` on the directory itself: no lock file is left behind, and
    the lock outlives the replacement of the file inside it. Where directories cannot be
    locked (NFS wants a file open for writing), it says so and goes on unlocked, as
    before locking existed: then concurrent recordings may lose one another's entry."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("cannot lock %s (%s): recording without a lock; do not record "
                        "into this model from two processes at once", folder, exc)
        yield
    finally:
        os.close(fd)                       # closing releases the lock
