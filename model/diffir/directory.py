"""DiffIR model directories: model.json (``"family": "diffir"``) + diffir.safetensors.

model.json holds what describes the model and rebuilds its network::

    {"format_version": 1, "family": "diffir", "name": "diffir_realsr_x4", "task": "sr",
     "scale": 4, "input_multiple": 8, "steps": 4, "description": "",
     "network_g": {"type": "DiffIRS2", "n_encoder_res": 9, "dim": 64, ...},
     "provenance": {...}, "metrics": {}}

``network_g`` is the official constructor mapping (``DiffIRConfig.to_official``), the
rest is derived from it or descriptive. diffir.safetensors holds the network's weights
once each (no duplicate ``diffusion.model.*`` keys) plus the two posterior coefficients
the sampler uses, under their official names (``diffusion.posterior_mean_coef1/2``), so
a save/load round trip samples with bit-identical numbers; loading reuses the official
import path (schedule checked against the config, every key and shape checked).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .checkpoint import load_weights, read_official
from .config import load_diffir_config
from .network import build_network
from .restorer import DiffIRRestorer
from .schedule import BUFFER_PREFIX, check_stored

FORMAT_VERSION = 1
WEIGHTS_FILE = "diffir.safetensors"
_DESCRIPTIVE = ("name", "description", "provenance", "metrics")


def model_json(restorer: DiffIRRestorer) -> dict[str, Any]:
    """The model.json mapping of ``restorer``."""
    cfg = restorer.config
    return {"format_version": FORMAT_VERSION, "family": "diffir", "name": restorer.name,
            "task": cfg.task, "scale": cfg.scale, "input_multiple": cfg.input_multiple,
            "steps": restorer.steps, "description": restorer.description,
            "network_g": cfg.to_official(), "provenance": restorer.provenance,
            "metrics": restorer.metrics}


def save(restorer: DiffIRRestorer, directory: Path, meta_name: str) -> Path:
    """Write model.json (as ``meta_name``) and the weights into ``directory``."""
    from safetensors.torch import save_file
    directory.mkdir(parents=True, exist_ok=True)
    restorer.provenance.setdefault("written", _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"))
    state = {k: v.detach().contiguous().cpu()
             for k, v in restorer.network.state_dict().items()}
    state[BUFFER_PREFIX + "posterior_mean_coef1"] = restorer.schedule.coef1.contiguous().cpu()
    state[BUFFER_PREFIX + "posterior_mean_coef2"] = restorer.schedule.coef2.contiguous().cpu()
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / meta_name).write_text(json.dumps(model_json(restorer), indent=2) + "\n")
    return directory


def load(directory: Path, meta: dict[str, Any],
         device: str | torch.device = "cpu") -> DiffIRRestorer:
    """A restorer from a DiffIR model directory whose model.json is ``meta``."""
    version = meta.get("format_version", FORMAT_VERSION)
    if version > FORMAT_VERSION:
        raise ConfigError(f"model.json format_version {version} is newer than this program "
                          f"understands ({FORMAT_VERSION}); upgrade resshift")
    if not isinstance(meta.get("network_g"), dict):
        raise ConfigError(f"{directory}: a DiffIR model.json needs 'network_g' (the DiffIRS2 "
                          "constructor arguments)")
    cfg = load_diffir_config(meta["network_g"])
    if "scale" in meta and int(meta["scale"]) != cfg.scale:
        raise ConfigError(f"{directory}: model.json says scale {meta['scale']} but network_g "
                          f"builds a x{cfg.scale} model")
    state = read_official(directory / WEIGHTS_FILE)
    schedule = check_stored(state.schedule, cfg.timesteps, cfg.linear_start, cfg.linear_end)
    net = load_weights(build_network(cfg, "meta"), state.weights)
    restorer = DiffIRRestorer(cfg, net, schedule, device)
    for key in _DESCRIPTIVE:
        if key in meta:
            setattr(restorer, key, meta[key])
    return restorer
