"""The training recipe as data: ``resshift train CONFIG.yaml`` reads one of these.

Sections (see ``configs/demo.yaml`` for a complete, commented example)::

    name, seed, output (model directory to write), work_dir (checkpoints, logs)
    model:  task, scale, description, unet {...}, diffusion {...} (official names),
            autoencoder {...} | null, autoencoder_checkpoint, init_from (a model dir)
    data:   train [sources], val [sources], gt_size, degradation, rescale_range,
            hflip, rot90, small_images (pad|skip), val_size, val_images
    train:  steps, batch_size, grad_accum, lr, min_lr, warmup_steps, weight_decay,
            betas, ema_decay, grad_clip, amp (auto|on|off), checkpoint_every,
            keep_checkpoints, checkpoint_file, val_every, log_every, threads,
            lpips_weight, loss (l2|relative_l2), objective (timestep|chain)

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from ..config import read_yaml_mapping
from ..errors import ConfigError


# train.loss values and how logs and provenance name them
LOSS_NAMES = {"l2": "L2", "relative_l2": "relative L2"}


@dataclass
class ModelSection:
    unet: dict = field(default_factory=dict)
    diffusion: dict = field(default_factory=dict)
    autoencoder: Optional[dict] = None
    autoencoder_checkpoint: Optional[str] = None
    init_from: Optional[str] = None
    task: str = "sr"
    scale: int = 4
    description: str = ""


@dataclass
class DataSection:
    train: list = field(default_factory=list)
    val: list = field(default_factory=list)
    gt_size: int = 256
    degradation: Any = "realesrgan"        # a name, or {name: weight} for a mixture
    rescale_range: tuple = (1.0, 1.0)
    hflip: bool = True
    rot90: bool = False          # also a random quarter-turn: the 8 flips and rotations
    small_images: Literal["pad", "skip"] = "pad"
    val_size: int = 256
    val_images: int = 8


@dataclass
class TrainSection:
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    min_lr: float = 2e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    ema_decay: float = 0.999
    grad_clip: Optional[float] = 1.0
    amp: Literal["auto", "on", "off"] = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    # one resume file, replaced in place at every checkpoint (instead of
    # <work_dir>/checkpoints/step_N.pt); relative to the working directory
    checkpoint_file: Optional[str] = None
    val_every: int = 1000
    log_every: int = 10
    threads: Optional[int] = None
    lpips_weight: float = 1.0
    # "l2": mean squared error over the batch. "relative_l2": each sample's squared error
    # divided by its bicubic baseline's (y_0 against x_0), so each image weighs as its
    # PSNR gain over bicubic does; plain L2 lets the few noisiest pairs set the gradient
    # while mean PSNR is set mostly by the easy images.
    loss: Literal["l2", "relative_l2"] = "l2"
    # "timestep": Algorithm 1, one random timestep per sample. "chain": the loss on the
    # output of the whole T-step reverse chain, run with gradients (T network calls per
    # sample): fine-tuning a trained model for the sampler that will run it.
    objective: Literal["timestep", "chain"] = "timestep"


@dataclass
class TrainConfig:
    model: ModelSection
    data: DataSection
    train: TrainSection
    name: str = "custom"
    seed: int = 0
    output: str = "models/custom"
    work_dir: str = "runs/custom"
    source_path: Optional[str] = None      # the YAML it came from (not part of the recipe)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source_path")
        for section in ("data", "train"):
            for k, v in d[section].items():
                if isinstance(v, tuple):
                    d[section][k] = list(v)
        return d

    @classmethod
    def from_dict(cls, raw: dict, source_path: Optional[str] = None) -> "TrainConfig":
        if not isinstance(raw, dict):
            raise ConfigError("a training config must be a mapping")
        raw = copy.deepcopy(raw)
        sections = {"model": ModelSection, "data": DataSection, "train": TrainSection}
        built: dict[str, Any] = {}
        for key, kind in sections.items():
            built[key] = _build(kind, raw.pop(key, None) or {}, key)
        top = {f.name for f in dataclasses.fields(cls)} - set(sections) - {"source_path"}
        unknown = sorted(set(raw) - top)
        if unknown:
            raise ConfigError(f"unknown top-level keys in the training config: {unknown}; "
                              f"known: {sorted(top | set(sections))}")
        cfg = cls(**built, **raw, source_path=source_path)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        t, d, m = self.train, self.data, self.model
        if t.steps < 1 or t.batch_size < 1 or t.grad_accum < 1:
            raise ConfigError("train.steps, batch_size and grad_accum must be >= 1")
        if t.loss not in LOSS_NAMES:
            raise ConfigError(f"train.loss must be one of {', '.join(LOSS_NAMES)}, "
                              f"got {t.loss!r}")
        if t.objective not in ("timestep", "chain"):
            raise ConfigError(f"train.objective must be 'timestep' or 'chain', got "
                              f"{t.objective!r}")
        if not 0 <= t.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
        for flag in ("hflip", "rot90"):
            if not isinstance(getattr(d, flag), bool):
                raise ConfigError(f"data.{flag} must be true or false, got "
                                  f"{getattr(d, flag)!r}")
        if not d.train:
            raise ConfigError("data.train lists no source (folders, .txt lists, pypi-samples "
                              "or dead-leaves[:N])")
        if m.init_from is None and not (m.unet and m.diffusion):
            raise ConfigError("model needs unet and diffusion params, or init_from a model dir")
        if m.autoencoder and not m.autoencoder_checkpoint and m.init_from is None:
            raise ConfigError("a latent model needs model.autoencoder_checkpoint (the frozen "
                              "VQGAN's weights)")
        try:
            from ..degradations import get_degradation
            get_degradation(d.degradation)
        except ValueError as exc:
            raise ConfigError(f"data.degradation: {exc}") from None
        if len(d.rescale_range) != 2 or not 0 < d.rescale_range[0] <= d.rescale_range[1]:
            raise ConfigError(f"data.rescale_range must be [low, high] > 0, got {d.rescale_range}")


def _build(kind, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"section {where!r} must be a mapping")
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown keys in {where}: {unknown}; known: {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) and k in ("rescale_range", "betas") else v
              for k, v in values.items()}
    return kind(**values)


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    return TrainConfig.from_dict(read_yaml_mapping(path), source_path=str(path))
