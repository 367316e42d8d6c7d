"""A model's configuration as data: model.json, official YAML files and presets.

``ModelConfig`` round-trips exactly through ``to_dict``/``from_dict`` (that dict is
model.json). Official YAML configs use OmegaConf interpolations such as
``${autoencoder.params.embed_dim}``; ``resolve_interpolations`` resolves them without
needing OmegaConf.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import ConfigError
from .presets import PRESET_NAMES, preset

FORMAT_VERSION = 1
Family = Literal["resshift", "diffir"]
_INTERP = re.compile(r"\$\{([^${}]+)\}")


def _lookup(root: dict, dotted: str) -> Any:
    node: Any = root
    for part in dotted.strip().split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ConfigError(f"interpolation ${{{dotted}}} points nowhere (no key {part!r})")
    return node


def resolve_interpolations(cfg: dict, max_depth: int = 20) -> dict:
    """Return a copy of ``cfg`` with every ``${a.b.c}`` replaced by that key's value.

    A string that is exactly one interpolation takes the referenced value with its type
    (so ``${autoencoder.params.embed_dim}`` becomes the int 3); interpolations inside a
    longer string are substituted as text. Chains resolve; cycles raise ConfigError.
    """
    root = copy.deepcopy(cfg)

    def resolve(value: Any, depth: int) -> Any:
        if depth > max_depth:
            raise ConfigError("interpolation cycle or nesting deeper than "
                              f"{max_depth} levels in the config")
        if isinstance(value, dict):
            return {k: resolve(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, depth) for v in value]
        if isinstance(value, str) and "${" in value:
            whole = _INTERP.fullmatch(value.strip())
            if whole:
                return resolve(_lookup(root, whole.group(1)), depth + 1)
            return _INTERP.sub(lambda m: str(resolve(_lookup(root, m.group(1)), depth + 1)),
                               value)
        return value

    return resolve(root, 0)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (model.json).

    unet / autoencoder / diffusion hold the official ``params`` dicts with the official
    names; ``autoencoder`` is None for pixel-space models (``latent_flag: false``).
    ``input_multiple``: LQ inputs are reflect-padded to a multiple of it (the official
    ``lq_size``-based padding). ``diffusion["sampler"]``: "full" or "single_step".
    """

    unet: dict
    diffusion: dict
    autoencoder: Optional[dict] = None
    family: Family = "resshift"
    name: str = "custom"
    task: str = "sr"
    scale: int = 4
    input_multiple: int = 64
    description: str = ""
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def latent(self) -> bool:
        return self.autoencoder is not None and bool(self.diffusion.get("latent_flag", True))

    @property
    def steps(self) -> int:
        return 1 if self.sampler == "single_step" else int(self.diffusion["steps"])

    @property
    def sampler(self) -> str:
        return self.diffusion.get("sampler", "full")

    @property
    def needs_mask(self) -> bool:
        return bool(self.unet.get("cond_mask", False))

    def to_dict(self) -> dict:
        return {
            "format_version": self.format_version, "family": self.family, "name": self.name,
            "task": self.task, "scale": self.scale, "input_multiple": self.input_multiple,
            "description": self.description, "unet": self.unet,
            "autoencoder": self.autoencoder, "diffusion": self.diffusion,
            "provenance": self.provenance, "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        version = d.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ConfigError(f"model.json format_version {version} is newer than this "
                              f"program understands ({FORMAT_VERSION}); upgrade resshift")
        missing = [k for k in ("unet", "diffusion") if k not in d]
        if missing:
            raise ConfigError(f"model config lacks {missing}; it needs 'unet' and 'diffusion'")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: copy.deepcopy(v) for k, v in d.items() if k in known})


def latent_factor(autoencoder: Optional[dict]) -> int:
    """Pixels per latent pixel: 2^(levels-1) for the VQGAN, 1 in pixel space."""
    if not autoencoder:
        return 1
    return 2 ** (len(autoencoder["ddconfig"]["ch_mult"]) - 1)


def latent_multiple(unet: dict) -> int:
    """Latent sizes must be multiples of the Swin window at the coarsest UNet level."""
    return int(unet.get("window_size", 8)) * 2 ** (len(unet.get("channel_mult", (1, 2, 2, 4))) - 1)


def input_multiple(unet: dict, autoencoder: Optional[dict], sf: int) -> int:
    """LQ pixels per padding unit, so the latent is a multiple of ``latent_multiple``.

    Gives the official values: 64 for x4 SR (f4), 256 for inpainting (f4), 512 for
    faces (f8).
    """
    return max(1, latent_multiple(unet) * latent_factor(autoencoder) // max(sf, 1))


def _task_for(unet: dict, autoencoder: Optional[dict], sf: int) -> str:
    if unet.get("cond_mask"):
        return "inpaint"
    if sf > 1:
        return "sr"
    if autoencoder and autoencoder.get("ddconfig", {}).get("resolution", 256) >= 512:
        return "face"
    return "restore"


def config_from_official(official: dict, name: str = "custom") -> ModelConfig:
    """ModelConfig from an official YAML loaded as a dict (sections model / autoencoder /
    diffusion, each with ``params``; the autoencoder section may be absent or null)."""
    cfg = resolve_interpolations(official)
    for section in ("model", "diffusion"):
        if not isinstance(cfg.get(section), dict) or "params" not in cfg[section]:
            raise ConfigError(f"official config lacks '{section}.params'")
    unet = dict(cfg["model"]["params"])
    diffusion = dict(cfg["diffusion"]["params"])
    ae_section = cfg.get("autoencoder")
    autoencoder = dict(ae_section["params"]) if isinstance(ae_section, dict) else None
    if autoencoder is not None:
        for k in ("ckpt_path", "lossconfig"):
            autoencoder.pop(k, None)
    sf = int(diffusion.get("sf", 1))
    return ModelConfig(unet=unet, diffusion=diffusion, autoencoder=autoencoder, name=name,
                       task=_task_for(unet, autoencoder, sf), scale=sf,
                       input_multiple=input_multiple(unet, autoencoder, sf))


def config_from_preset(name: str) -> ModelConfig:
    p = preset(name)
    cfg = config_from_official({"model": {"params": p["unet"]},
                                "autoencoder": {"params": p["autoencoder"]},
                                "diffusion": {"params": p["diffusion"]}}, name=name)
    cfg.task, cfg.description = p["task"], p["description"]
    return cfg


def load_config(spec: str | Path | dict) -> ModelConfig:
    """A preset name, a path to an official YAML (or model.json), or an official dict."""
    if isinstance(spec, dict):
        return config_from_official(spec)
    text = str(spec)
    if text in PRESET_NAMES:
        return config_from_preset(text)
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"{text!r} is neither a preset ({', '.join(PRESET_NAMES)}) "
                          "nor a config file that exists")
    data = read_yaml_mapping(path)
    if "format_version" in data or "unet" in data:
        return ModelConfig.from_dict(data)
    return config_from_official(data, name=path.stem)


def read_yaml_mapping(path: Path) -> dict:
    """A YAML (or JSON) file that must hold a mapping: its dict, or a ConfigError naming
    the file and what is wrong."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping")
    return data
