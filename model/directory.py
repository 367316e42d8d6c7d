"""Model directories (model.json + unet.safetensors [+ autoencoder.safetensors]) and
building restorers from configs and checkpoints.

model.json's ``family`` picks the implementation: ``resshift`` (this module) or
``diffir`` (``model.diffir.directory``: model.json + diffir.safetensors). ``load`` and
``save`` take either.

A model directory is the unit everything else deals in: ``resshift import-official``
and ``resshift train`` write one, ``model.load`` reads one. Exports go beside it
(``onnx/``, ``tensorrt/...``), never over it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from .checkpoint import load_into, save_safetensors
from .config import ModelConfig, load_config
from .diffir import directory as diffir_directory
from .diffir.restorer import DiffIRRestorer
from .errors import ConfigError
from .nets.autoencoder import VQAutoencoder
from .nets.unet import SwinUNet
from .presets import PRESET_NAMES, preset
from .restorer import Restorer

MODEL_JSON = "model.json"
UNET_FILE = "unet.safetensors"
AUTOENCODER_FILE = "autoencoder.safetensors"
BUNDLED = {"demo": Path(__file__).resolve().parent / "bundled" / "demo"}


def build_networks(config: ModelConfig, device: str | torch.device = "cpu"
                   ) -> tuple[SwinUNet, Optional[VQAutoencoder]]:
    """Networks of ``config`` with freshly initialised weights (``device="meta"``: none)."""
    with torch.device(device):
        unet = SwinUNet(**config.unet)
        autoencoder = VQAutoencoder(**config.autoencoder) if config.autoencoder else None
    return unet, autoencoder


def _restorer(config: ModelConfig, unet_state, autoencoder_state, device) -> Restorer:
    unet, autoencoder = build_networks(config, "meta")
    load_into(unet, unet_state, "UNet")
    if autoencoder is not None:
        if autoencoder_state is None:
            raise ConfigError("this model has an autoencoder; give its checkpoint too")
        load_into(autoencoder, autoencoder_state, "autoencoder")
    return Restorer(config, unet, autoencoder, device)


def import_official(config: str | Path | dict, unet_state: str | Path | Mapping,
                    autoencoder_state: str | Path | Mapping | None = None,
                    device: str | torch.device = "cpu") -> Restorer:
    """A restorer from official checkpoints.

    config: a preset name (``model.presets``), a path to an official YAML (OmegaConf
    interpolations resolved), or that YAML loaded as a dict. States: dicts or paths.
    """
    cfg = load_config(config)
    cfg.provenance.setdefault("source", "official checkpoint import")
    if not isinstance(unet_state, Mapping):
        cfg.provenance["unet_file"] = Path(unet_state).name
    if autoencoder_state is not None and not isinstance(autoencoder_state, Mapping):
        cfg.provenance["autoencoder_file"] = Path(autoencoder_state).name
    return _restorer(cfg, unet_state, autoencoder_state, device)


def resolve_model_dir(path: str | Path) -> Path:
    if str(path) in BUNDLED:
        return BUNDLED[str(path)]
    return Path(path)


def missing_model_hint(path: str | Path, directory: Path) -> str:
    """What to do about a model directory without model.json, for the error that says so:
    a path is usually one meant for official weights that were never imported. A folder
    named after a preset (models/inpaint_imagenet) gets that preset's import command."""
    if str(path) in BUNDLED:
        return " (the bundled demo model is not built yet)"
    name = directory.name if directory.name in PRESET_NAMES else "realsr_v3"
    p = preset(name)
    return (f"; make it from the official weights with `resshift import-official --preset "
            f"{name} --unet {p['official_unet_file']} --autoencoder "
            f"{p['official_autoencoder_file']} -o {directory}` (presets: `resshift "
            f"import-official --help`), or use the bundled demo model `demo` (what "
            f"`resshift restore` uses when --model is omitted)")


def load(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a model directory (or a bundled model by name, e.g. ``"demo"``).

    Returns a ``Restorer`` (family resshift) or a ``DiffIRRestorer`` (family diffir).
    """
    directory = resolve_model_dir(path)
    meta = directory / MODEL_JSON
    if not meta.is_file():
        raise ConfigError(f"{directory} is not a model directory: no {MODEL_JSON}"
                          + missing_model_hint(path, directory))
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{meta} does not hold a JSON object")
    family = data.get("family", "resshift")
    loader = LOADERS.get(family)
    if loader is None:
        raise ConfigError(f"{directory} holds a {family!r} model; known families are "
                          + ", ".join(repr(f) for f in LOADERS))
    return loader(directory, data, device)


def _load_resshift(directory: Path, data: dict, device: str | torch.device) -> Restorer:
    config = ModelConfig.from_dict(data)
    ae_path = directory / AUTOENCODER_FILE if config.autoencoder else None
    return _restorer(config, directory / UNET_FILE, ae_path, device)


# model.json's "family" -> the loader of that family's directories
LOADERS: dict[str, Callable[[Path, dict, Any], Any]] = {
    "resshift": _load_resshift,
    "diffir": diffir_directory.load,
}


@functools.singledispatch
def save(restorer: Any, directory: str | Path) -> Path:
    """Write ``restorer`` (either family) as a model directory; returns its path."""
    raise ConfigError(f"no model directory format for a {type(restorer).__name__}")


@save.register
def _(restorer: Restorer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = restorer.config
    config.provenance.setdefault("written", _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"))
    save_safetensors(restorer.unet, directory / UNET_FILE)
    if restorer.autoencoder is not None:
        save_safetensors(restorer.autoencoder, directory / AUTOENCODER_FILE)
    (directory / MODEL_JSON).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return directory


@save.register
def _(restorer: DiffIRRestorer, directory: str | Path) -> Path:
    return diffir_directory.save(restorer, Path(directory), MODEL_JSON)
