"""TensorRT engines: module resolution, profiles, the engine-cache key and the build.

One code path serves ``tensorrt`` 10.x, ``tensorrt`` 11.x and ``tensorrt_rtx``
(:func:`resolve_tensorrt_module`: ``tensorrt`` when it imports, else ``tensorrt_rtx``;
``RESSHIFT_TENSORRT_MODULE=tensorrt_rtx`` or ``module=`` forces one). Every engine is a
strongly typed network parsed from the ONNX graph of its precision (``OnnxStore``: the
fp16 graph keeps norms, softmax, the timestep embedding and the codebook lookup in
float32 and has float32 inputs and outputs), so the graph, not builder flags, decides
each layer's precision: TensorRT 11 has no FP16 builder flag and strong typing is the
only mode it has.

An engine depends on the weights, the ONNX graph file, the build recipe, the TensorRT
module and version, the compute capability and the optimization profile; all of them
go into :func:`engine_key` and the engine's file name, so a changed input never reuses
a stale engine::

    MODEL_DIR/tensorrt/unet_t64-b1-8-8-64x64-fp16-sm90-trt10.9.0.34-<key 16 hex>.plan
    MODEL_DIR/tensorrt/vae_encoder-b1-8-8-256x256-512x512-fp16-sm86-rtx1.7.1.116-<key>.plan

(or the per-user cache for bundled / read-only models, ``export.paths``). Profiles
(:func:`profiles_for`): batch 1 .. the service's ``max_batch``; the UNet at its latent
tile; the VAE graphs over a spatial range from the smallest padded image to one VAE tile
(an image under one tile reaches the backend at its own size). Engines are written to a
temporary name and renamed, so a reader never sees half a file and a second build finds
the first one's engine.

TensorRT-RTX builds ahead of time without a GPU for a target compute capability
(``compute_capability="8.6"``; default the visible GPU's). ``tensorrt`` needs the GPU it
builds for. Running engines: ``export.trt_runtime``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from model.atomic import write_atomic as _write_atomic

from .errors import BackendUnavailable, ExportError
from .limits import MAX_BATCH
from .manifest import file_hash
from .store import OnnxStore, export_copy

log = logging.getLogger("resshift.export")

Precision = Literal["fp16", "fp32"]
KEY_FORMAT = 2
MODULES = ("tensorrt", "tensorrt_rtx")
MODULE_ENV = "RESSHIFT_TENSORRT_MODULE"
RTX = "tensorrt_rtx"
INSTALL = ("pip install 'resshift-service[trt]' (TensorRT 10/11, on a machine with an "
           "NVIDIA GPU) or 'resshift-service[trt-rtx]' (TensorRT-RTX)")

Progress = Callable[[str], None]


# -- the module --------------------------------------------------------------------------
def _import(candidates) -> tuple[object, list[str]]:
    """(the first of ``candidates`` that imports or None, why each earlier one did not)."""
    tried = []
    for candidate in candidates:
        if importlib.util.find_spec(candidate) is None:
            tried.append(f"{candidate} is not installed")
            continue
        try:
            return importlib.import_module(candidate), tried
        except Exception as exc:   # broken installs raise OSError etc., not just ImportError
            tried.append(f"{candidate} failed to import ({exc})")
    return None, tried


def _candidates(name: Optional[str]) -> tuple[str, ...]:
    forced = name or os.environ.get(MODULE_ENV) or None
    if forced is not None and forced not in MODULES:
        raise BackendUnavailable(f"unknown TensorRT module {forced!r} ({MODULE_ENV}); use "
                                 f"one of {', '.join(MODULES)}")
    return (forced,) if forced else MODULES


def resolve_tensorrt_module(name: Optional[str] = None):
    """The TensorRT Python module to use: ``name``, else ``$RESSHIFT_TENSORRT_MODULE``,
    else ``tensorrt`` when it imports and ``tensorrt_rtx`` otherwise. Both expose the
    same builder / runtime API under the same names, so callers do not care which.

    Raises ``BackendUnavailable`` naming what was tried and how to install one."""
    mod, tried = _import(_candidates(name))
    if mod is None:
        raise BackendUnavailable(f"the tensorrt backend needs a TensorRT module "
                                 f"({'; '.join(tried)}); install with {INSTALL}, or use "
                                 f"--backend onnxruntime or torch")
    return mod


def is_rtx(module) -> bool:
    return module.__name__.split(".")[0] == RTX


def network_flags(module) -> int:
    """Creation flags of a strongly typed network. TensorRT 11 deprecates the flag (strong
    typing is its only mode) but still accepts it; older ones need it set."""
    flag = getattr(module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def rtx_targets(module) -> list[str]:
    """Compute capabilities TensorRT-RTX can build for, as "8.6" strings."""
    out = []
    for member in module.ComputeCapability.__members__:
        if member.startswith("SM") and member[2:].isdigit():
            digits = member[2:]
            out.append(f"{digits[:-1]}.{digits[-1]}")
    return out


def rtx_target(module, compute_capability: str, visible: bool = False):
    """The ``ComputeCapability`` member for "8.6". A GPU visible here (``visible``) whose
    capability has no member of its own is built for as ``CURRENT`` (TensorRT-RTX then
    decides, and says so when it cannot); an ahead-of-time target without a member
    raises BackendUnavailable."""
    member = "SM" + compute_capability.replace(".", "")
    found = module.ComputeCapability.__members__.get(member)
    if found is None and visible:
        return module.ComputeCapability.CURRENT
    if found is None:
        raise BackendUnavailable(
            f"{module.__name__} {module.__version__} builds ahead of time for compute "
            f"capabilities {', '.join(rtx_targets(module))}, not {compute_capability}")
    return found


# -- profiles and keys -------------------------------------------------------------------
@dataclass(frozen=True)
class EngineProfile:
    """One engine's optimization profile.

    graph: ONNX graph name (``unet_t64``, ``vae_encoder``, ``vae_decoder``);
    batch: (min, opt, max) batch sizes; tile: (h, w) of the graph's spatial input at its
    largest, which is also the shape the profile is optimised for (latent pixels for the
    UNet and decoder, image pixels for the encoder); min_tile: the smallest (h, w) for
    graphs with dynamic spatial axes (the VAE), None for a fixed shape;
    precision: which ONNX graph is parsed, "fp16" (float32 where fp16 breaks a layer,
    decided in the graph) or "fp32".
    """

    graph: str
    batch: tuple[int, int, int]
    tile: tuple[int, int]
    precision: Precision = "fp16"
    min_tile: Optional[tuple[int, int]] = None

    def __post_init__(self):
        lo, opt, hi = self.batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"batch sizes must satisfy 1 <= min <= opt <= max, got {self.batch}")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")
        if self.min_tile is not None and not all(
                1 <= a <= b for a, b in zip(self.min_tile, self.tile)):
            raise ValueError(f"min_tile {self.min_tile} must lie within 1 .. tile {self.tile}")

    @property
    def spatial(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(smallest, largest) spatial (h, w) this engine accepts."""
        return (self.min_tile or self.tile), self.tile

    def tag(self) -> str:
        lo, opt, hi = self.batch
        small, big = self.spatial
        size = f"{big[0]}x{big[1]}" if small == big else (
            f"{small[0]}x{small[1]}-{big[0]}x{big[1]}")
        return f"{self.graph}-b{lo}-{opt}-{hi}-{size}-{self.precision}"

    def input_shapes(self, name: str, dims) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) shapes of a network input whose ONNX shape is ``dims`` (-1 for a
        dynamic axis): axis 0 is the batch, dynamic axes 2 and 3 the spatial range."""
        dims = tuple(int(d) for d in dims)
        shapes = []
        for which in range(3):
            shape = []
            for axis, d in enumerate(dims):
                if d >= 0:
                    shape.append(d)
                elif axis == 0:
                    shape.append(self.batch[which])
                elif axis in (2, 3) and len(dims) == 4:
                    small, big = self.spatial
                    shape.append((small if which == 0 else big)[axis - 2])
                else:
                    raise ExportError(f"{self.graph}: input {name} has a dynamic axis {axis} "
                                      f"(shape {list(dims)}) no profile covers")
            shapes.append(tuple(shape))
        return tuple(shapes)


@dataclass(frozen=True)
class BuildRecipe:
    """How an engine is built beyond its profile: a strongly typed network (the only
    recipe this code builds; part of the key so a weakly typed engine can never be
    mistaken for one), the builder's optimization level (None: TensorRT's default; lower
    builds faster, for tests) and whether float32 layers may use TF32 (off: float32 is
    IEEE float32, as in the other backends)."""

    strongly_typed: bool = True
    optimization_level: Optional[int] = None
    tf32: bool = False


@dataclass(frozen=True)
class TensorRTDevice:
    """What of the machine changes an engine: the compute capability it is built for
    (the GPU's, or TensorRT-RTX's ahead-of-time target), the TensorRT module and its
    version."""

    compute_capability: str        # "9.0"
    tensorrt_version: str          # "10.9.0.34"
    gpu_name: str = ""
    module: str = "tensorrt"       # "tensorrt" | "tensorrt_rtx"


def engine_key(weights_sha256: str, device: TensorRTDevice, profile: EngineProfile,
               graph_sha256: str = "", recipe: BuildRecipe = BuildRecipe()) -> str:
    """sha256 (hex) over everything that changes an engine: weights, the ONNX graph file,
    the recipe, the TensorRT module and version, the compute capability and the profile
    (graph, batch sizes, spatial range, precision). The GPU's name is left out: two cards
    of one compute capability share engines."""
    payload = {"format": KEY_FORMAT, "weights": weights_sha256, "graph": graph_sha256,
               "recipe": asdict(recipe), "module": device.module,
               "compute_capability": device.compute_capability,
               "tensorrt": device.tensorrt_version, "profile": asdict(profile)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_path(directory: Path, weights_sha256: str, device: TensorRTDevice,
                profile: EngineProfile, graph_sha256: str = "",
                recipe: BuildRecipe = BuildRecipe()) -> Path:
    """The engine's file: a readable name plus the key."""
    sm = device.compute_capability.replace(".", "")
    kind = "rtx" if device.module == RTX else "trt"
    key = engine_key(weights_sha256, device, profile, graph_sha256, recipe)
    return Path(directory) / (f"{profile.tag()}-sm{sm}-{kind}{device.tensorrt_version}-"
                              f"{key[:16]}.plan")


def timing_cache_path(directory: Path, device: TensorRTDevice) -> Path:
    """The builder's timing cache in the engine folder: one per module, version and
    compute capability (TensorRT refuses a cache from another of these)."""
    sm = device.compute_capability.replace(".", "")
    return Path(directory) / f"timing-{device.module}{device.tensorrt_version}-sm{sm}.cache"


def default_max_batch() -> int:
    """The service's default ``max_batch`` (``export.limits``, which the service's
    settings also read): the most tiles one UNet call takes, so what an engine must
    accept."""
    return MAX_BATCH


def unet_profile(h: int, w: int, max_batch: int, precision: Precision = "fp16"
                 ) -> EngineProfile:
    """The UNet engine for latent tiles of h x w (the shift mask of the Swin blocks is a
    function of the spatial size, so each shape is its own graph and engine)."""
    name = f"unet_t{h}" if h == w else f"unet_t{h}x{w}"
    return EngineProfile(name, (1, max_batch, max_batch), (h, w), precision)


def profiles_for(restorer, tile: Optional[int] = None, max_batch: Optional[int] = None,
                 precision: Precision = "fp16") -> list[EngineProfile]:
    """Profiles for the shapes ``restorer.restore(tile=...)`` and the service run: the
    UNet at the latent tile; for latent models the encoder and decoder from the smallest
    padded image (one latent unit) up to one VAE tile. Batch 1 .. max_batch (default: the
    service's ``max_batch``, not ``TileOptions.max_batch``: the service batches tiles of
    several requests into one call), optimised for the largest."""
    opts = restorer.tile_options(tile)
    if opts is None:
        raise BackendUnavailable("TensorRT engines need fixed tile shapes; use a tile size "
                                 "(--tile N), not --tile 0")
    hi = int(max_batch or default_max_batch())
    if hi < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    n = opts.latent_tile
    out = [unet_profile(n, n, hi, precision)]
    if restorer.latent:
        f = int(restorer.factor)
        big = max(1, opts.vae_tile // f)          # latent side of one VAE tile
        small = min(int(restorer.latent_unit), big)
        batch = (1, hi, hi)
        out += [EngineProfile("vae_encoder", batch, (big * f,) * 2, precision,
                              (small * f,) * 2),
                EngineProfile("vae_decoder", batch, (big,) * 2, precision, (small,) * 2)]
    return out


# -- what this machine can build ---------------------------------------------------------
def _cuda_device(device=None):
    """``device`` when it is a CUDA device, else the current one; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    if device is not None and torch.device(device).type == "cuda":
        return torch.device(device)
    return torch.device("cuda", torch.cuda.current_device())


def _visible_cc(device=None) -> Optional[str]:
    import torch

    cuda = _cuda_device(device)
    if cuda is None:
        return None
    major, minor = torch.cuda.get_device_capability(cuda)
    return f"{major}.{minor}"


def probe_tensorrt(compute_capability: Optional[str] = None, module: Optional[str] = None,
                   device=None) -> TensorRTDevice:
    """The TensorRT module and the compute capability engines are built for here.

    ``tensorrt`` builds for the visible GPU (``device``, default the current one);
    ``tensorrt_rtx`` builds ahead of time for ``compute_capability`` ("8.6"), default the
    visible GPU's (as ``CURRENT`` when RTX has no member for it, :func:`rtx_target`), and
    needs no GPU when a target is given. ``BackendUnavailable`` names every missing piece
    otherwise."""
    import torch

    missing = []
    mod, tried = _import(_candidates(module))
    if mod is None:
        missing.append(f"a TensorRT module ({'; '.join(tried)})")
    cuda = _cuda_device(device)
    rtx = mod is not None and is_rtx(mod)
    if cuda is None and not (rtx and compute_capability):
        missing.insert(0, "a CUDA GPU (torch sees none)" + (
            "; tensorrt_rtx builds without one for a target compute capability, "
            "compute_capability= or --compute-capability X.Y" if rtx else ""))
    if missing:
        raise BackendUnavailable(f"the tensorrt backend needs {' and '.join(missing)}; "
                                 f"install with {INSTALL}, or use --backend onnxruntime "
                                 f"or torch")
    name, visible = "", None
    if cuda is not None:
        major, minor = torch.cuda.get_device_capability(cuda)
        name = torch.cuda.get_device_name(cuda)
        visible = f"{major}.{minor}"
        if compute_capability and not rtx and compute_capability != visible:
            raise BackendUnavailable(f"{mod.__name__} builds for the visible GPU ({visible}); "
                                     f"building for {compute_capability} ahead of time "
                                     f"needs tensorrt_rtx")
        compute_capability = compute_capability or visible
    if rtx and (cuda is None or compute_capability != visible):
        rtx_target(mod, compute_capability)        # raises for a target RTX cannot build
    return TensorRTDevice(str(compute_capability), str(mod.__version__), name,
                          mod.__name__.split(".")[0])


def unavailable_reason() -> Optional[str]:
    """Why the tensorrt backend cannot run here, or None: a TensorRT module imports and a
    CUDA GPU it can build for is visible."""
    try:
        probe_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    return None


# -- the build ---------------------------------------------------------------------------
_LEVELS = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR,
           "WARNING": logging.WARNING, "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}


_LOGGERS: dict[str, object] = {}


def trt_logger(module):
    """The TensorRT logger of ``module``, handing its messages to this package's logging
    (TensorRT's own prints to stdout, where the CLI prints engine paths): errors and
    warnings as such, its info and verbose chatter at DEBUG. One per module and process:
    TensorRT keeps the first logger it is given and ignores (with a warning) others."""
    if module.__name__ not in _LOGGERS:
        _LOGGERS[module.__name__] = _make_logger(module)
    return _LOGGERS[module.__name__]


def _make_logger(module):
    class ToLogging(module.ILogger):
        def __init__(self):
            module.ILogger.__init__(self)

        def log(self, severity, msg):
            level = _LEVELS.get(getattr(severity, "name", ""), logging.WARNING)
            if log.isEnabledFor(level):
                log.log(level, "%s: %s", module.__name__, msg)

    return ToLogging()


class ParsedNetwork:
    """A strongly typed network parsed from an ONNX file, with the builder and parser it
    belongs to, kept together: the network refers to both while it is in use."""

    def __init__(self, onnx_path: str | Path, module=None):
        self.module = module if module is not None else resolve_tensorrt_module()
        trt = self.module
        self.path = Path(onnx_path)
        self.logger = trt_logger(trt)
        self.builder = trt.Builder(self.logger)
        self.network = self.builder.create_network(network_flags(trt))
        self.parser = trt.OnnxParser(self.network, self.logger)
        # parse_from_file resolves external weight files beside the graph
        if not self.parser.parse_from_file(str(self.path)):
            errors = [str(self.parser.get_error(i).desc()) for i in range(self.parser.num_errors)]
            raise ExportError(f"{trt.__name__} cannot parse {self.path.name}: "
                              f"{'; '.join(errors) or 'no error reported'}")

    def inputs(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(t.name, tuple(t.shape)) for t in
                (self.network.get_input(i) for i in range(self.network.num_inputs))]

    def layer_precisions(self) -> dict[str, dict[str, int]]:
        """{layer type: {output dtype: count}}: what a strongly typed build computes in
        (the output type of each layer, which the graph's casts decide)."""
        out: dict[str, dict[str, int]] = {}
        for i in range(self.network.num_layers):
            layer = self.network.get_layer(i)
            kind = layer.type.name
            dtype = layer.get_output(0).dtype.name if layer.num_outputs else "NONE"
            out.setdefault(kind, {}).setdefault(dtype, 0)
            out[kind][dtype] += 1
        return out


def build_engine(onnx_path: str | Path, profile: EngineProfile, out: str | Path,
                 device: TensorRTDevice, recipe: BuildRecipe = BuildRecipe(),
                 timing_cache: Optional[Path] = None, module=None) -> Path:
    """Parse ``onnx_path`` as a strongly typed network and build ``profile``'s engine into
    ``out`` (written to a temporary name, then renamed). ``timing_cache``: a file loaded
    before and saved after the build (``tensorrt``; TensorRT-RTX has no timing cache: its
    kernels are picked on the GPU at run time, and its cache calls are no-ops)."""
    mod = module if module is not None else resolve_tensorrt_module(device.module)
    if not recipe.strongly_typed:
        raise ExportError("only strongly typed networks are built (precision comes from "
                          "the ONNX graph)")
    parsed = ParsedNetwork(onnx_path, mod)
    builder = parsed.builder
    config = builder.create_builder_config()
    if recipe.optimization_level is not None:
        config.builder_optimization_level = int(recipe.optimization_level)
    tf32 = getattr(mod.BuilderFlag, "TF32", None)
    if tf32 is not None and not recipe.tf32:
        # TensorRT allows TF32 for float32 layers by default; the layers the graph keeps
        # in float32 (norms, softmax, the codebook lookup) are float32 for precision
        config.clear_flag(tf32)
    if is_rtx(mod):
        config.num_compute_capabilities = 1
        visible = _cuda_device() is not None and device.compute_capability == _visible_cc()
        config.set_compute_capability(rtx_target(mod, device.compute_capability, visible), 0)
    opt = builder.create_optimization_profile()
    for name, dims in parsed.inputs():
        opt.set_shape(name, *profile.input_shapes(name, dims))
    config.add_optimization_profile(opt)
    cache = None
    if timing_cache is not None and not is_rtx(mod):
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            log.warning("%s does not fit this TensorRT; starting a new one", timing_cache.name)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(parsed.network, config)
    if serialized is None:
        # unavailable rather than broken: e.g. a GPU TensorRT-RTX cannot target
        raise BackendUnavailable(f"{mod.__name__} {mod.__version__} could not build "
                                 f"{profile.tag()} for sm {device.compute_capability} from "
                                 f"{Path(onnx_path).name} (its log says why)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, memoryview(serialized))
    if cache is not None:
        _write_atomic(timing_cache, memoryview(cache.serialize()))
    return out


def onnx_graph(store, profile: EngineProfile) -> Path:
    """The ONNX graph of the profile's precision an engine is parsed from (``OnnxStore``:
    the fp16 twin of the checked float32 graph for "fp16")."""
    kind = "unet" if profile.graph.startswith("unet") else profile.graph
    return store.graph(kind, profile.precision, profile.tile if kind == "unet" else None)


class EngineBuilder:
    """Builds (or finds) the engines of one restorer: its graph store, the TensorRT module
    and target, and the engine folder. Used by :func:`build_engines` and the backend,
    which also builds engines for UNet shapes it sees later (images under one tile).

    The TensorRT module and target are probed on first need (:attr:`device`), so graphs
    can be exported and checked on a machine that cannot build."""

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 cache: Optional[Path] = None, compute_capability: Optional[str] = None,
                 module: Optional[str] = None, optimization_level: Optional[int] = None,
                 device=None, progress: Optional[Progress] = None):
        self.store = OnnxStore(export_copy(restorer), model_dir, cache)
        self.recipe = BuildRecipe(True, optimization_level)
        self.progress = progress or (lambda line: log.info("%s", line))
        self._target = (compute_capability, module, device)
        self._device: Optional[TensorRTDevice] = None

    @property
    def device(self) -> TensorRTDevice:
        if self._device is None:
            self._device = probe_tensorrt(*self._target)
        return self._device

    @property
    def directory(self) -> Path:
        return self.store.paths.tensorrt

    def path_for(self, profile: EngineProfile) -> Path:
        """The engine file of ``profile`` (exports the ONNX graph when missing)."""
        graph = onnx_graph(self.store, profile)
        return engine_path(self.directory, self.store.weights, self.device, profile,
                           file_hash(graph), self.recipe)

    def build(self, profiles: list[EngineProfile]) -> list[Path]:
        for profile in profiles:        # every graph first: checked even where no build runs
            onnx_graph(self.store, profile)
        device = _cuda_device(self._target[2])
        if device is None:
            return self._build(profiles)
        import torch
        with torch.cuda.device(device):         # the builder works on the current GPU
            return self._build(profiles)

    def _build(self, profiles: list[EngineProfile]) -> list[Path]:
        module = resolve_tensorrt_module(self.device.module)
        paths = []
        for i, profile in enumerate(profiles):
            start = time.perf_counter()
            path = self.path_for(profile)
            head = f"[{i + 1}/{len(profiles)}] {profile.tag()}"
            if path.is_file():
                self.progress(f"{head}: found {path}")
            else:
                self.progress(f"{head}: building with {self.device.module} "
                              f"{self.device.tensorrt_version} for sm "
                              f"{self.device.compute_capability} ...")
                build_engine(onnx_graph(self.store, profile), profile, path, self.device,
                             self.recipe, timing_cache_path(self.directory, self.device),
                             module)
                self.progress(f"{head}: built in {time.perf_counter() - start:.1f} s, "
                              f"{path.stat().st_size / 2**20:.1f} MiB -> {path}")
            paths.append(path)
        return paths


def build_engines(restorer, model_dir: str | Path | None = None, tile: Optional[int] = None,
                  max_batch: Optional[int] = None, precision: Precision = "fp16",
                  cache: Optional[Path] = None, *, compute_capability: Optional[str] = None,
                  module: Optional[str] = None, optimization_level: Optional[int] = None,
                  progress: Optional[Progress] = None) -> list[Path]:
    """Engines for ``restorer`` at ``tile``: profiles -> checked ONNX graphs -> TensorRT
    module and target -> engine files (found by :func:`engine_path` or built). Returns
    their paths, in :func:`profiles_for` order; ``progress`` gets one line per engine.

    ``compute_capability``: TensorRT-RTX's ahead-of-time target ("8.6"; default the
    visible GPU's). ``optimization_level``: the builder's (0-5; lower builds faster).
    Raises ``BackendUnavailable`` after the graphs when this machine cannot build (no
    TensorRT module, or no GPU and no TensorRT-RTX target), naming what is missing.
    """
    profiles = profiles_for(restorer, tile, max_batch, precision)
    builder = EngineBuilder(restorer, model_dir, cache, compute_capability, module,
                            optimization_level, progress=progress)
    return builder.build(profiles)
