"""DiffIR S2 configuration: the ``network_g`` section of the authors' test YAML, as data.

The official ``DiffIRS2`` constructor has defaults for every argument, but those defaults
(``dim 48``, ``num_blocks [4,6,6,8]`` ...) describe none of the released real-world SR
models. Silently filling them in would build a network that cannot load the checkpoint,
or worse, one that loads a differently shaped one; so the arguments that shape the
network are required here and only the ones every released model leaves at the default
(channels, bias, the diffusion schedule) may be omitted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from ..config import read_yaml_mapping
from ..errors import ConfigError

LayerNormType = Literal["BiasFree", "WithBias"]
SCALES = (1, 2, 4)
# CPEN and the IPR denoiser are built with a fixed width of 64 in the official code,
# whatever ``dim`` is: the IPR always has 4 * 64 = 256 numbers.
CPEN_WIDTH = 64
IPR_WIDTH = 4 * CPEN_WIDTH
# The transformer downsamples three times (1/8); x2 / x1 models first pixel-unshuffle
# the input by 2 / 4 so that they share the x4 layout, hence 8 * 4 / scale.
BASE_MULTIPLE = 8

_REQUIRED = ("n_encoder_res", "dim", "scale", "num_blocks", "num_refinement_blocks", "heads",
             "ffn_expansion_factor", "LayerNorm_type")
_OPTIONAL: dict[str, Any] = {"inp_channels": 3, "out_channels": 3, "bias": False,
                             "n_denoise_res": 1, "linear_start": 0.1, "linear_end": 0.99,
                             "timesteps": 4}


@dataclass(frozen=True)
class DiffIRConfig:
    """Constructor arguments of ``DiffIRS2`` (official names kept in ``to_official``)."""

    n_encoder_res: int
    dim: int
    scale: int
    num_blocks: tuple[int, int, int, int]
    num_refinement_blocks: int
    heads: tuple[int, int, int, int]
    ffn_expansion_factor: float
    layernorm: LayerNormType
    inp_channels: int = 3
    out_channels: int = 3
    bias: bool = False
    n_denoise_res: int = 1
    linear_start: float = 0.1
    linear_end: float = 0.99
    timesteps: int = 4

    @property
    def input_multiple(self) -> int:
        """LQ sides must be multiples of this (8 for x4, 16 for x2, 32 for x1)."""
        return BASE_MULTIPLE * self.unshuffle

    @property
    def unshuffle(self) -> int:
        """Pixel-unshuffle factor applied to the LQ before the transformer and CPEN."""
        return 4 // self.scale

    @property
    def task(self) -> str:
        """What the model does, in the service's words: "sr" (x2, x4) or "restore" (x1)."""
        return "sr" if self.scale > 1 else "restore"

    @property
    def needs_mask(self) -> bool:
        """DiffIR S2 takes no mask (asked of every model config by the CLI and service)."""
        return False

    def to_official(self) -> dict[str, Any]:
        """The ``network_g`` mapping (``type: DiffIRS2``) that builds this network."""
        out = asdict(self)
        out["LayerNorm_type"] = out.pop("layernorm")
        out["num_blocks"], out["heads"] = list(self.num_blocks), list(self.heads)
        return {"type": "DiffIRS2", **out}


def load_diffir_config(spec: DiffIRConfig | Mapping | str | Path) -> DiffIRConfig:
    """A ``DiffIRConfig`` from itself, a ``network_g`` dict, or a YAML file.

    The YAML may be the ``network_g`` section alone or a whole test/train options file;
    in the latter case a top-level ``scale`` fills in a ``network_g`` without one.
    """
    if isinstance(spec, DiffIRConfig):
        return spec
    if isinstance(spec, Mapping):
        return config_from_official(spec)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"DiffIR config {path} does not exist")
    return config_from_official(read_yaml_mapping(path))


def config_from_official(data: Mapping) -> DiffIRConfig:
    """Validate a ``network_g`` mapping (or an options file holding one)."""
    if isinstance(data.get("network_g"), Mapping):
        section = dict(data["network_g"])
        if "scale" not in section and "scale" in data:
            section["scale"] = data["scale"]
    else:
        section = dict(data)
    kind = section.pop("type", "DiffIRS2")
    if kind != "DiffIRS2":
        raise ConfigError(f"network type {kind!r} is not supported; only DiffIRS2 (the "
                          "DiffIR stage-2 restorer) can be imported")
    unknown = sorted(set(section) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"unknown DiffIRS2 argument(s): {', '.join(unknown)}; expected "
                          f"{', '.join(_REQUIRED + tuple(_OPTIONAL))}")
    missing = [k for k in _REQUIRED if k not in section]
    if missing:
        raise ConfigError(f"the DiffIRS2 config lacks {', '.join(missing)}: these shape the "
                          "network and have no safe default; copy them from the model's "
                          "test YAML (network_g)")
    args = {**_OPTIONAL, **section}
    cfg = DiffIRConfig(
        n_encoder_res=_int(args, "n_encoder_res", 0), dim=_int(args, "dim", 1),
        scale=_int(args, "scale", 1), num_blocks=_four(args, "num_blocks", 1),
        num_refinement_blocks=_int(args, "num_refinement_blocks", 0),
        heads=_four(args, "heads", 1),
        ffn_expansion_factor=_float(args, "ffn_expansion_factor"),
        layernorm=args["LayerNorm_type"], inp_channels=_int(args, "inp_channels", 1),
        out_channels=_int(args, "out_channels", 1), bias=_bool(args, "bias"),
        n_denoise_res=_int(args, "n_denoise_res", 0), linear_start=_float(args, "linear_start"),
        linear_end=_float(args, "linear_end"), timesteps=_int(args, "timesteps", 1))
    _check(cfg)
    return cfg


def _check(cfg: DiffIRConfig) -> None:
    if cfg.layernorm not in ("BiasFree", "WithBias"):
        raise ConfigError(f"LayerNorm_type must be BiasFree or WithBias, got {cfg.layernorm!r}")
    if cfg.scale not in SCALES:
        raise ConfigError(f"scale must be one of {SCALES}, got {cfg.scale}")
    if cfg.inp_channels != 3 or cfg.out_channels != 3:
        # CPEN's first convolution and the nearest-upsampled skip assume RGB in and out.
        raise ConfigError("DiffIRS2 restores RGB images: inp_channels and out_channels must be 3")
    for level, heads in enumerate(cfg.heads):
        width = cfg.dim * 2 ** level
        if width % heads:
            raise ConfigError(f"level {level + 1} has {width} channels, not divisible by "
                              f"heads[{level}] = {heads}")
    if cfg.dim * 2 % cfg.heads[0]:
        raise ConfigError(f"the decoder's first level has {cfg.dim * 2} channels, not "
                          f"divisible by heads[0] = {cfg.heads[0]}")
    if not 0.0 < cfg.linear_start <= cfg.linear_end < 1.0:
        raise ConfigError("the beta schedule needs 0 < linear_start <= linear_end < 1, got "
                          f"{cfg.linear_start} .. {cfg.linear_end}")


def _int(args: Mapping, key: str, low: int) -> int:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    return value


def _float(args: Mapping, key: str) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _bool(args: Mapping, key: str) -> bool:
    if not isinstance(args[key], bool):
        raise ConfigError(f"{key} must be true or false, got {args[key]!r}")
    return args[key]


def _four(args: Mapping, key: str, low: int) -> tuple[int, int, int, int]:
    value = args[key]
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ConfigError(f"{key} must list 4 integers (one per level), got {value!r}")
    return tuple(_int({key: v}, key, low) for v in value)  # type: ignore[return-value]
