"""Official DiffIR S2 checkpoints <-> ``DiffIRS2Net``.

Released files are ``torch.save``d dicts with the weights under ``params_ema`` (some
also ``params``, which is ignored then). Their state dicts differ from our module's in
two ways, both handled here:

- duplicates: the official ``diffusion`` sub-module registers the denoiser and the
  condition encoder a second time, so every ``denoise.*`` / ``condition.*`` tensor
  also appears as ``diffusion.model.*`` / ``diffusion.condition.*`` (``ALIASES``);
- the schedule: twelve ``diffusion.<buffer>`` tensors (``schedule.BUFFER_NAMES``).

An alias must equal its primary tensor (it *is* the same tensor in the official
module); an alias whose primary is absent stands in for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..checkpoint import StateDict, check_fit, read_state_dict
from ..errors import CheckpointError
from .schedule import BUFFER_NAMES, BUFFER_PREFIX

# duplicate prefix -> primary prefix
ALIASES = {"diffusion.model.": "denoise.", "diffusion.condition.": "condition."}


@dataclass
class OfficialState:
    """A checkpoint split into our module's weights and the stored schedule buffers."""

    weights: StateDict
    schedule: dict[str, torch.Tensor]   # buffer name (no prefix) -> tensor; may be empty
    aliases: int                        # how many duplicate keys were folded in


def primary_key(key: str) -> str:
    """The key a duplicate stands for (the key itself when it is no duplicate)."""
    for alias, primary in ALIASES.items():
        if key.startswith(alias):
            return primary + key[len(alias):]
    return key


def alias_keys(key: str) -> list[str]:
    """The duplicate keys the official state dict holds for ``key`` (often none)."""
    return [alias + key[len(primary):] for alias, primary in ALIASES.items()
            if key.startswith(primary)]


def split_official(state: Mapping[str, torch.Tensor]) -> OfficialState:
    """Fold duplicates into their primaries and take the schedule buffers out."""
    weights: StateDict = {}
    schedule: dict[str, torch.Tensor] = {}
    duplicates: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len(BUFFER_PREFIX):] if key.startswith(BUFFER_PREFIX) else None
        if name in BUFFER_NAMES:
            schedule[name] = value
        elif primary_key(key) != key:
            duplicates[key] = value
        else:
            weights[key] = value
    for key, value in duplicates.items():
        primary = primary_key(key)
        if primary not in weights:
            weights[primary] = value
        elif weights[primary].shape != value.shape or not torch.equal(weights[primary], value):
            raise CheckpointError(
                f"{key} should be a copy of {primary} (the official model registers that "
                "module twice) but the two differ; the checkpoint is inconsistent")
    return OfficialState(weights, schedule, len(duplicates))


def read_official(source: str | Path | Mapping) -> OfficialState:
    """Read a path or a loaded dict (``params_ema``/``params`` unwrapped, ``module.``
    prefixes stripped by ``model.checkpoint.read_state_dict``) and split it."""
    return split_official(read_state_dict(source))


def load_weights(net: nn.Module, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """Check ``weights`` fit ``net`` key for key and shape for shape, then copy them in.

    A meta-device ``net`` takes the tensors over (``assign``) instead of copying.
    """
    check_fit(net, weights, "DiffIR")
    meta = any(p.is_meta for p in net.parameters())
    net.load_state_dict(dict(weights), strict=True, assign=meta)
    return net


def official_layout(net: nn.Module, timesteps: int) -> dict[str, tuple[int, ...]]:
    """Every key (duplicates and schedule buffers included) and shape that the official
    ``DiffIRS2`` state dict has for the same configuration."""
    layout: dict[str, tuple[int, ...]] = {}
    for key, value in net.state_dict().items():
        layout[key] = tuple(value.shape)
    for name in BUFFER_NAMES:
        layout[BUFFER_PREFIX + name] = (timesteps,)
    for key, shape in list(layout.items()):
        for alias in alias_keys(key):
            layout[alias] = shape
    return layout
