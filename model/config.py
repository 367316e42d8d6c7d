"""A model's configuration as data: model.json, official YAML files and presets.

``ModelConfig`` round-trips exactly through ``to_dict``/``from_dict`` (that dict is
model.json): the official ``params`` dicts as they are. ``ModelSpec`` is what the code
reads of them, typed, checked and with its defaults in one place (``ModelSpec.from_config``;
``Restorer.spec`` is built once per model). Official YAML configs use OmegaConf
interpolations such as ``${autoencoder.params.embed_dim}``; ``resolve_interpolations``
resolves them without needing OmegaConf.
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
PREDICT_TYPES = ("xstart", "residual")
SAMPLERS = ("full", "single_step")
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
    def spec(self) -> "ModelSpec":
        """The typed, checked reading of this config (built anew on every access: a
        ModelConfig may still be edited; a Restorer keeps the one it was built with)."""
        return ModelSpec.from_config(self)

    @property
    def latent(self) -> bool:
        return self.spec.latent

    @property
    def steps(self) -> int:
        return self.spec.steps

    @property
    def sampler(self) -> str:
        return self.spec.sampler

    @property
    def needs_mask(self) -> bool:
        return self.spec.cond_mask

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


@dataclass(frozen=True)
class ModelSpec:
    """What the code needs of a ResShift model's config, typed, with ONE set of defaults.

    The defaults are those of the networks the config builds (``SwinUNet``'s
    ``cond_lq``, ``lq_size``, ``window_size``, ``channel_mult``) and of the official
    sampler (``normalize_input``, ``latent_flag``, ``predict_type``, ``sf``), so the
    code never assumes another value than the network was built with. ``image_size``
    and ``steps`` have none: neither the UNet nor the schedule can be built without.
    """

    latent: bool            # latent diffusion (a VQGAN and ``latent_flag``), else pixels
    scale: int              # ``sf``: output pixels per LQ pixel
    image_size: int         # the UNet's latent resolution at construction
    lq_size: int            # the resolution its lq conditioning has at that size
    cond_lq: bool           # the UNet takes the LQ image as conditioning
    cond_mask: bool         # ... and a mask (inpainting)
    normalize_input: bool   # x_t is divided by ``Schedule.input_scale`` for the UNet
    predict_type: str       # what the UNet outputs: "xstart" (x_0) or "residual" (y_0 - x_0)
    sampler: str            # "full" (T steps) or "single_step" (one call, distilled models)
    timesteps: int          # T, the schedule's length
    factor: int             # pixels per latent pixel (1 in pixel space)
    latent_unit: int        # latent sizes (and tiles) must be multiples of this
    input_multiple: int     # LQ inputs are padded to multiples of this
    # the sampling noise's scale (``diffusion.noise_scale``, not an official key): 1 draws
    # x_T and each step from the distributions the model was trained on (the official
    # sampler); 0 starts from y_0 and takes each step's mean, so the output no longer
    # depends on the seed. Between the two, a temperature.
    noise_scale: float = 1.0

    @property
    def lq_ratio(self) -> int:
        """How many times the latent's resolution the lq conditioning has."""
        return max(1, self.lq_size // self.image_size)

    @property
    def clip_denoised(self) -> bool:
        """Clamp x0 predictions to [-1, 1] (the official sampler: pixel space only)."""
        return not self.latent

    @property
    def steps(self) -> int:
        """Network calls per canvas (tile): T, or 1 for single-step models."""
        return 1 if self.sampler == "single_step" else self.timesteps

    @classmethod
    def from_config(cls, config: "ModelConfig") -> "ModelSpec":
        """Read and check ``config`` (ConfigError names what is wrong)."""
        unet, diffusion = config.unet, config.diffusion
        for section, params, key in (("model", unet, "image_size"),
                                     ("diffusion", diffusion, "steps")):
            if key not in params:
                raise ConfigError(f"the config lacks {section}.params.{key}")
        latent = config.autoencoder is not None and bool(diffusion.get("latent_flag", True))
        image_size = int(unet["image_size"])
        lq_size = int(unet.get("lq_size", 256))
        predict_type = str(diffusion.get("predict_type", "xstart"))
        if predict_type not in PREDICT_TYPES:
            raise ConfigError(f"predict_type {predict_type!r} is not supported; use one of "
                              f"{', '.join(PREDICT_TYPES)}")
        if predict_type == "residual" and (latent or lq_size != image_size):
            raise ConfigError("predict_type 'residual' needs a pixel-space model with "
                              "lq_size == image_size (its lq conditioning is y_0)")
        sampler = str(diffusion.get("sampler", "full"))
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler {sampler!r} is not supported; use one of "
                              f"{', '.join(SAMPLERS)}")
        noise_scale = diffusion.get("noise_scale", 1.0)
        # a number, not a bool or a numeric string (YAML "0" and JSON true are mistakes);
        # compared before float() so a huge int cannot overflow, and NaN fails the range
        if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) \
                or not 0 <= noise_scale <= 1:
            raise ConfigError(f"diffusion noise_scale must be a number from 0 to 1, got "
                              f"{noise_scale!r}")
        return cls(
            latent=latent, scale=int(diffusion.get("sf", config.scale)),
            image_size=image_size, lq_size=lq_size,
            cond_lq=bool(unet.get("cond_lq", True)), cond_mask=bool(unet.get("cond_mask", False)),
            normalize_input=bool(diffusion.get("normalize_input", True)),
            predict_type=predict_type, sampler=sampler, timesteps=int(diffusion["steps"]),
            factor=latent_factor(config.autoencoder if latent else None),
            latent_unit=latent_multiple(unet), input_multiple=int(config.input_multiple),
            noise_scale=float(noise_scale))


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
