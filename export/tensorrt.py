"""TensorRT engines: profiles, the engine-cache key, and the builder's path up to the GPU.

An engine depends on the weights, the GPU (compute capability), the TensorRT version and
the optimization profile (graph, batch sizes, tile shape, precision); all of them go
into :func:`engine_key` and the engine's file name, so a changed input never reuses a
stale engine::

    MODEL_DIR/tensorrt/unet_t64-b1-4-4-64x64-fp16-sm90-trt10.9.0-<key 16 hex>.plan

(or the per-user cache for bundled / read-only models, ``export.paths``).

State here: profiles, keys and paths are complete and tested on CPU; :func:`build_engines`
exports and finds the ONNX graphs, then needs a CUDA GPU and the ``tensorrt`` package
(:func:`probe_tensorrt` raises ``BackendUnavailable`` naming what is missing). Building,
checking (PSNR >= 40 dB vs torch fp32) and running engines is the device session's work
of issue 4 and also raises ``BackendUnavailable`` until then.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from .errors import BackendUnavailable

Precision = Literal["fp16", "fp32"]
KEY_FORMAT = 1
INSTALL = "pip install 'resshift-service[trt]' (TensorRT 10, on a machine with an NVIDIA GPU)"


@dataclass(frozen=True)
class EngineProfile:
    """One engine's optimization profile.

    graph: ONNX graph name (``unet_t64``, ``vae_encoder``, ``vae_decoder``);
    batch: (min, opt, max) batch sizes; tile: (h, w) of the graph's spatial input
    (latent pixels for the UNet and decoder, image pixels for the encoder);
    precision: "fp16" (fp32 where fp16 breaks a layer) or "fp32".
    """

    graph: str
    batch: tuple[int, int, int]
    tile: tuple[int, int]
    precision: Precision = "fp16"

    def __post_init__(self):
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {self.batch}")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")

    def tag(self) -> str:
        lo, opt, hi = self.batch
        return f"{self.graph}-b{lo}-{opt}-{hi}-{self.tile[0]}x{self.tile[1]}-{self.precision}"


@dataclass(frozen=True)
class TensorRTDevice:
    """What of the machine changes an engine: GPU compute capability, TensorRT version."""

    compute_capability: str        # "9.0"
    tensorrt_version: str          # "10.9.0.34"
    gpu_name: str = ""


def engine_key(weights_sha256: str, device: TensorRTDevice, profile: EngineProfile) -> str:
    """sha256 (hex) over everything that changes an engine: weights, compute capability,
    TensorRT version, profile (graph, batch sizes, tile shape, precision). The GPU's
    name is left out: two cards of one compute capability share engines."""
    payload = {"format": KEY_FORMAT, "weights": weights_sha256,
               "compute_capability": device.compute_capability,
               "tensorrt": device.tensorrt_version, "profile": asdict(profile)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_path(directory: Path, weights_sha256: str, device: TensorRTDevice,
                profile: EngineProfile) -> Path:
    """The engine's file: a readable name plus the key."""
    sm = device.compute_capability.replace(".", "")
    return Path(directory) / (f"{profile.tag()}-sm{sm}-trt{device.tensorrt_version}-"
                              f"{engine_key(weights_sha256, device, profile)[:16]}.plan")


def profiles_for(restorer, tile: Optional[int] = None, max_batch: Optional[int] = None,
                 precision: Precision = "fp16") -> list[EngineProfile]:
    """Profiles for the shapes ``restorer.restore(tile=...)`` runs: the UNet at the
    latent tile, and for latent models the encoder / decoder at the VAE tile; batch
    1 .. max_batch (default ``TileOptions.max_batch``), optimised for the largest."""
    opts = restorer.tile_options(tile)
    if opts is None:
        raise BackendUnavailable("TensorRT engines need fixed tile shapes; use a tile size "
                                 "(--tile N), not --tile 0")
    hi = int(max_batch or opts.max_batch)
    batch = (1, hi, hi)
    n = opts.latent_tile
    out = [EngineProfile(f"unet_t{n}", batch, (n, n), precision)]
    if restorer.latent:
        px = opts.vae_tile
        out += [EngineProfile("vae_encoder", batch, (px, px), precision),
                EngineProfile("vae_decoder", batch, (px // restorer.factor,) * 2, precision)]
    return out


def probe_tensorrt() -> TensorRTDevice:
    """The GPU and TensorRT this process can use; ``BackendUnavailable`` naming every
    missing piece (a CUDA GPU visible to torch, the tensorrt package) otherwise."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch sees none)")
    version = None
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the tensorrt package")
    else:
        try:
            import tensorrt
            version = str(tensorrt.__version__)
        except Exception as exc:   # broken installs raise OSError etc., not just ImportError
            missing.append(f"a working tensorrt package (import failed: {exc})")
    if missing:
        raise BackendUnavailable(f"the tensorrt backend needs {' and '.join(missing)}; "
                                 f"install with {INSTALL}, or use --backend onnxruntime "
                                 f"or torch")
    major, minor = torch.cuda.get_device_capability()
    return TensorRTDevice(f"{major}.{minor}", version, torch.cuda.get_device_name())


def unavailable_reason() -> Optional[str]:
    """Why the tensorrt backend cannot run here (None once it can)."""
    try:
        probe_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    return "building and checking TensorRT engines is not implemented yet (issue 4)"


def build_engines(restorer, model_dir: str | Path | None = None, tile: Optional[int] = None,
                  max_batch: Optional[int] = None, precision: Precision = "fp16",
                  cache: Optional[Path] = None) -> list[Path]:
    """Engines for ``restorer`` at ``tile``: profiles -> checked ONNX graphs -> GPU and
    TensorRT -> engine files (cached by :func:`engine_path`). Returns their paths.

    Raises ``BackendUnavailable`` at the step that cannot run here.
    """
    from .store import OnnxStore

    profiles = profiles_for(restorer, tile, max_batch, precision)
    store = OnnxStore(restorer, model_dir, cache)
    graphs = {p.graph: (store.unet(*p.tile) if p.graph.startswith("unet")
                        else store.encoder() if p.graph == "vae_encoder" else store.decoder())
              for p in profiles}
    device = probe_tensorrt()
    wanted = [engine_path(store.paths.tensorrt, store.weights, device, p) for p in profiles]
    if all(p.is_file() for p in wanted):
        return wanted
    raise BackendUnavailable(
        f"building TensorRT engines is not implemented yet (issue 4): would build "
        f"{', '.join(p.name for p in wanted)} from {', '.join(sorted(map(str, graphs.values())))}")
