"""``import_diffir``: a ``DiffIRRestorer`` from an official config and checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from .checkpoint import load_weights, read_official
from .config import DiffIRConfig, load_diffir_config
from .network import build_network
from .restorer import DiffIRRestorer
from .schedule import check_stored


def import_diffir(config: DiffIRConfig | Mapping | str | Path,
                  checkpoint: str | Path | Mapping,
                  device: str | torch.device = "cpu") -> DiffIRRestorer:
    """A DiffIR S2 restorer from official files.

    config: the ``network_g`` section of DiffIR's test YAML (``type: DiffIRS2`` and the
    constructor arguments) as a dict, or a path to that YAML (a whole options file is
    fine too). checkpoint: a ``.pth`` path or the loaded dict; weights under
    ``params_ema`` or ``params``, ``module.`` prefixes and duplicate keys accepted.
    Raises ConfigError for a bad config, CheckpointError for a checkpoint that does
    not fit it (naming the first missing, unexpected and mis-shaped keys).
    """
    cfg = load_diffir_config(config)
    state = read_official(checkpoint)
    schedule = check_stored(state.schedule, cfg.timesteps, cfg.linear_start, cfg.linear_end)
    net = load_weights(build_network(cfg, "meta"), state.weights)
    restorer = DiffIRRestorer(cfg, net, schedule, device)
    restorer.provenance["source"] = "official DiffIR checkpoint import"
    if not isinstance(checkpoint, Mapping):
        restorer.provenance["checkpoint_file"] = Path(checkpoint).name
    return restorer
