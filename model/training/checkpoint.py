"""Training checkpoints: everything needed to continue a run exactly.

A checkpoint (``<work_dir>/checkpoints/step_0001000.pt``) holds the UNet, the EMA
weights, the optimizer (and AMP scaler) state, the step, the wall time spent so far,
the recipe, and every RNG state (python, numpy, torch CPU and CUDA). Batches and
diffusion noise are derived from (seed, step), so with these the resumed run follows
the uninterrupted one bit for bit on the same hardware and thread count.
Files are written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import CheckpointError

_NAME = re.compile(r"step_(\d+)\.pt$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(work_dir: Path, step: int) -> Path:
    return Path(work_dir) / "checkpoints" / f"step_{step:07d}.pt"


def list_checkpoints(work_dir: Path) -> list[Path]:
    folder = Path(work_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(work_dir: Path) -> Optional[Path]:
    found = list_checkpoints(work_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict, path: Path, keep: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(path.parent.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # RNG states hold numpy arrays and tuples: not loadable with weights_only
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's to replace
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from exc
