"""Runtime backends: where a restorer's networks run, behind one small interface.

A :class:`Backend` runs the UNet on a batch (the network alone: the restorer wraps it
into the samplers' denoiser, ``model.denoiser``), the VQGAN encoder and the decoder. The
one sampler and the restorer's pre/post-processing stay the same for every backend::

    from export.families import create_backend
    backend = create_backend("onnxruntime", restorer, model_dir="models/realsr_v3")
    image = restorer.using(backend).restore(lq, seed=1)

``torch``       the restorer's own modules (CPU or CUDA).
``onnxruntime`` sessions over MODEL_DIR/onnx/ graphs (``export.store``: exported and
                checked on first use; the UNet graph of each tile shape in use); CUDA
                execution provider when onnxruntime has it and the restorer is on CUDA,
                CPU otherwise.
``tensorrt``    fp16 engines built from the fp16 ONNX graphs (``export.tensorrt``; on
                the restorer's CUDA device, ``export.trt_runtime``); without a TensorRT
                module or a CUDA GPU, ``BackendUnavailable`` saying what is missing.
``auto``        the fastest usable one (``export.families.choose_backend``: on the CPU
                onnxruntime for the UNet and the torch autoencoder in row bands
                (float32; the decoder bf16 where bf16 pays), :class:`SplitBackend`;
                onnxruntime alone for pixel-space models; measured in
                docs/benchmarks.md).

Precision (:data:`PRECISIONS`, :func:`resolve_precision`) is what the torch-run
networks use: ``auto`` is fp16 on CUDA, bf16 on CPUs with AMX-BF16 / AVX512-BF16 where
bf16 also measured faster (``export.cpu_probe``), fp32 elsewhere. TF32 for float32 work
on CUDA is its own switch (:func:`apply_tf32`), set once when a backend for a CUDA
restorer is created.

Graphs are always exported from a float32 CPU copy of the modules
(``export.store.export_copy``), whatever device the restorer serves on.

Images larger than one VAE tile run the torch autoencoder band by band or in tiles
with shared GroupNorm statistics (``Restorer._vae``, docs/tiling.md), both hooks on the
torch modules, so they always run on torch (a torch backend's ``tile_encode`` /
``tile_decode``, at its precision); a graph backend's encoder / decoder runs images
that fit one VAE tile.

DiffIR models take torch or onnxruntime; their onnxruntime backend answers
``forward(lq, noise)`` and ``dirformer(lq, ipr)`` instead (``export.diffir_backend``).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch

from model.denoiser import Network

from .cpu_probe import BF16_MIN_SPEEDUP, bf16_speedup
from .errors import BackendUnavailable, ExportError
from .ort import CUDA_EP, OnnxUNet
from .ort_sessions import OrtSessions
from .store import OnnxStore
from .tensorrt import (EngineBuilder, default_max_batch, probe_tensorrt, profiles_for,
                       unet_profile)
from .trt_runtime import open_engine

log = logging.getLogger("resshift.export")

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "bf16", "bf16-all", "fp16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(fp32 | bf16 | bf16-all | fp16, why). ``auto``: fp16 on CUDA (tensor cores run
    half precision at several times the float32 rate, half the memory traffic, and
    fp16 keeps 3 more mantissa bits than bf16, so the codebook lookup sees the
    float32 choices far more often; the decoder's NaN/Inf fallback catches overflow);
    bf16 on a CPU with native bf16 kernels (AMX-BF16 or AVX512-BF16 in
    :func:`cpu_flags`) where a bf16 convolution also measured at least
    ``BF16_MIN_SPEEDUP`` times faster than float32 (``export.cpu_probe``: some CPUs with
    the flags run bf16 slower); fp32 elsewhere (emulated bf16 is slower than fp32)."""
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; use one of "
                                 f"{', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "asked for"
    kind = torch.device(device).type
    if kind == "cuda":
        return "fp16", "CUDA: fp16 autocast runs on tensor cores"
    if kind != "cpu":
        return "fp32", f"not a CPU or CUDA device ({device})"
    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if not found:
        return "fp32", f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)}"
    speedup = bf16_speedup()
    measured = (f"the CPU has {' and '.join(found)} and a bf16 convolution ran "
                f"{speedup:.2f}x as fast as float32 here")
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", measured
    return "fp32", f"{measured} (bf16 needs at least {BF16_MIN_SPEEDUP}x)"


class Backend(Protocol):
    """Where the networks run. Tensors in and out live on the restorer's device."""

    name: str

    def unet_fn(self) -> Network:
        """The UNet as ``f(x_scaled, t, lq, mask) -> output`` (BxCxhxw batches): the
        network's own output, before any ``predict_type`` conversion."""

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW in [-1, 1] -> latent z (no quantisation)."""

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Latent -> Bx3xHxW image in [-1, 1] (not clamped)."""

    def describe(self) -> str:
        """One line for logs and the CLI: name, device / provider, precision."""

    # Optional: ``tile_encode`` / ``tile_decode`` (same signatures as encode / decode)
    # when they run the restorer's own torch autoencoder (``autoencoder``, the very
    # module objects), so a tiled VAE pass can use them: its shared GroupNorm
    # statistics are hooks on those modules. Graph runtimes (onnxruntime, TensorRT)
    # offer none, and their tiles run on the float32 torch modules.


def decode_failure(image: torch.Tensor) -> Optional[str]:
    """Why a decoded image (before clamping) is unusable, or None: NaN or Inf values.

    An fp16/bf16 overflow shows up here as Inf/NaN before the clamp turns it into black
    pixels; a decoded image that is merely dark (a black border, a night scene) is
    fine and is not decoded again.
    """
    finite = torch.isfinite(image)
    if bool(finite.all()):
        return None
    bad = int((~finite).sum())
    return f"{bad} NaN/Inf value(s) of {image.numel()}"


class TorchBackend:
    """The restorer's own torch modules, in float32 or under bfloat16 / float16 autocast.

    Precisions (:data:`PRECISIONS`), all with float32 inputs and outputs:

    ``fp32``      plain float32.
    ``bf16``      ``torch.autocast(device, bfloat16)`` with channels-last activations
                  (AMX / AVX512-BF16 kernels) for what stays within 40 dB of float32:
                  the VQGAN decoder after the codebook lookup, and the UNet of
                  pixel-space models. Everything upstream of a codebook (encoder, UNet
                  of latent models) stays float32: bf16's 0.4 % rounding there flips
                  nearest-codebook choices, which the decoded image shows (measured:
                  docs/benchmarks.md, "CPU backends and precision").
    ``bf16-all``  bf16 for the UNet, encoder and decoder (the speed ceiling; fails the
                  40 dB bound on latent models, see above).
    ``fp16``      ``torch.autocast(device, float16)`` + channels-last for the UNet,
                  encoder and decoder: the CUDA choice (tensor cores). fp16 rounds 8x
                  finer than bf16 (10 vs 7 mantissa bits), which keeps the codebook
                  choices upstream of the lookup close to float32's; its narrower range
                  is what the decoder's NaN/Inf fallback is for.

    Always float32: GroupNorm statistics (``GroupNorm32``, autocast's fp32 list) and
    the codebook nearest-neighbour lookup (run outside autocast).

    CUDA graphs are not used: the service's batches vary in size (1 to
    ``RESSHIFT_MAX_BATCH``) and in tile shape, so each combination would need its own
    capture with static input buffers, and the tiled VAE runs Python (GroupNorm
    statistics hooks) between kernels, which a capture cannot hold.
    """

    name = "torch"

    def __init__(self, restorer, precision: str = "fp32"):
        if precision not in PRECISIONS[1:]:
            raise BackendUnavailable(f"unknown torch precision {precision!r}; use one of "
                                     f"{', '.join(PRECISIONS[1:])}")
        self.restorer = restorer.using(None) if hasattr(restorer, "using") else restorer
        self.precision = precision
        latent = bool(getattr(self.restorer, "latent", False))
        full = precision in ("bf16-all", "fp16")
        # bf16_* name the networks run in reduced precision (bfloat16, or float16 for fp16)
        self.bf16_unet = full or (precision == "bf16" and not latent)
        self.bf16_encoder = full and latent
        self.bf16_decoder = precision != "fp32" and latent
        self.half_dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        self.fallbacks = 0                 # reduced-precision decodes redone in float32
        self.on_fallback: Optional[Callable[[str], None]] = None

    def _autocast(self):
        return torch.autocast(self.restorer.device.type, dtype=self.half_dtype)

    @staticmethod
    def _cl(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def unet_fn(self) -> Network:
        run_fp32 = self.restorer.unet_fn()
        if not self.bf16_unet:
            return run_fp32
        cl = self._cl

        def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
            with self._autocast():
                out = run_fp32(cl(x), t, cl(lq) if lq is not None else None,
                               cl(mask) if mask is not None else None)
            return out.float().contiguous()
        return run

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        ae = self.restorer.autoencoder
        if not self.bf16_encoder:
            with self._cpu_bands(ae):
                return ae.encode(image)
        with self._autocast():
            return ae.encode(self._cl(image)).float().contiguous()

    def _cpu_bands(self, ae):
        """On the CPU the float32 encoder and decoder run in row bands
        (``model.nets.banded``) at every size: the modules' result to ~1e-6, and faster,
        since a band stays in cache from normalisation to convolution and the
        upsampling convolutions take 2.25x fewer FLOPs (256x256 output: encoder 2.0 s
        against 2.3 s for the module and 2.6 s for onnxruntime, decoder 3.7 s against
        4.5 and 5.0 s; docs/benchmarks.md). Not for the bf16 decoder (its channels-last
        module is faster whole below one VAE tile) nor on CUDA (many small kernels).
        Inside the restorer's own banded pass (large images) that pass's settings stay
        (``banded()`` is re-entrant)."""
        if self.restorer.device.type != "cpu" or not getattr(ae, "bandable", False):
            return contextlib.nullcontext()
        return ae.banded()

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        ae = self.restorer.autoencoder
        if not self.bf16_decoder:
            with self._cpu_bands(ae):
                return ae.decode(z, quantize=quantize)
        if quantize:                # the codebook lookup stays float32, outside autocast
            z = ae.quantize(z.float())
        with self._autocast():
            out = ae.decoder(ae.post_quant_conv(self._cl(z)))
        out = out.float().contiguous()
        bad = decode_failure(out)
        if bad is not None:
            # Reduced-precision VAE decoders are known to overflow (black or NaN images):
            # this tile is decoded again in float32, and the event is counted.
            self.fallbacks += 1
            log.warning("%s decode gave %s; decoding again in float32", self.precision, bad)
            if self.on_fallback is not None:
                self.on_fallback(bad)
            out = ae.decoder(ae.post_quant_conv(z.float()))
        return out

    @property
    def autoencoder(self):
        return getattr(self.restorer, "autoencoder", None)

    # encode and decode run the restorer's own modules: tiles may use them as they are
    tile_encode = property(lambda self: self.encode)
    tile_decode = property(lambda self: self.decode)

    def describe(self) -> str:
        if self.precision == "fp32":
            return f"torch ({self.restorer.device}, float32)"
        parts = [n for n, on in (("UNet", self.bf16_unet), ("encoder", self.bf16_encoder),
                                 ("decoder", self.bf16_decoder)) if on]
        half = "float16" if self.half_dtype == torch.float16 else "bfloat16"
        return (f"torch ({self.restorer.device}, {half} autocast + channels-last for "
                f"{', '.join(parts) or 'nothing'}, float32 otherwise)")


def apply_tf32(enabled: bool) -> dict[str, str]:
    """Make TF32 for float32 CUDA convolutions and matmuls what ``enabled`` says, and
    return the settings now in force (for the log line).

    torch 2.13 runs float32 cuDNN convolutions in TF32 unless told otherwise
    (``torch.backends.cudnn.conv.fp32_precision`` defaults to "tf32") while matmuls
    stay IEEE: "fp32" was silently TF32 for most of this model. Set both here, once per
    process (the switches are process-wide), when a backend for a CUDA restorer is
    made. Older torch has only the ``allow_tf32`` flags."""
    value = "tf32" if enabled else "ieee"
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    matmul = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if conv is not None and matmul is not None:
        torch.backends.cudnn.conv.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
        return {"cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
                "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    return {"cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32),
            "cuda.matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32)}


class OnnxRuntimeBackend(OrtSessions):
    """onnxruntime sessions over the restorer's checked ONNX graphs (float32).

    model_dir: where the restorer came from (its ``onnx/`` folder is used or filled);
    None or a bundled / read-only model: the per-user cache (``export.paths``).
    """

    store_class = OnnxStore

    def unet_fn(self) -> Network:
        per_shape: dict[tuple[int, int], OnnxUNet] = {}

        def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if (h, w) not in per_shape:
                graph = self._session(f"unet{h}x{w}", lambda: self.store.unet(h, w),
                                      fixed_shape=True)
                per_shape[(h, w)] = OnnxUNet(graph)
            return per_shape[(h, w)](x, t, lq, mask)
        return run

    def prepare(self, latent_tiles: "list[tuple[int, int]]", vae: bool = True
                ) -> list[str]:
        """Export (when missing), check and open the graphs for these UNet tile shapes and
        (with ``vae``) the autoencoder, now rather than on a request. Returns what was
        opened."""
        opened = []
        for h, w in latent_tiles:
            self._session(f"unet{h}x{w}", lambda h=h, w=w: self.store.unet(h, w),
                          fixed_shape=True)
            opened.append(f"unet {h}x{w}")
        if vae and getattr(self.restorer, "latent", False):
            self._session("encoder", self.store.encoder)
            self._session("decoder", self.store.decoder)
            opened += ["vae_encoder", "vae_decoder"]
        return opened

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        graph = self._session("encoder", self.store.encoder)
        return graph(image=image.float())[0].to(image.device)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        if not quantize:        # the graph always quantises; the unquantised path is torch's
            return self.restorer.autoencoder.decode(z, quantize=False)
        graph = self._session("decoder", self.store.decoder)
        return graph(z=z.float())[0].to(z.device)

    def describe(self) -> str:
        where = "CUDA" if self.providers[0] == CUDA_EP else "CPU"
        return f"onnxruntime ({where}, float32, graphs in {self.store.directory})"


class SplitBackend:
    """The UNet on one backend, the autoencoder on another: on the CPU the fastest mix
    within 40 dB of float32 (onnxruntime float32 UNet; the torch autoencoder in row
    bands, float32, with the decoder in bf16 after the codebook lookup where bf16 pays;
    see ``export.families.choose_backend``). ``decoder`` is the torch backend that runs
    both autoencoder halves (the name is kept from when only the decoder ran there)."""

    name = "split"

    def __init__(self, upstream: Backend, decoder: Backend):
        self.upstream, self.decoder = upstream, decoder
        self.precision = getattr(decoder, "precision", "fp32")     # the autoencoder's

    def unet_fn(self) -> Network:
        return self.upstream.unet_fn()

    def prepare(self, latent_tiles: "list[tuple[int, int]]") -> list[str]:
        return self.upstream.prepare(latent_tiles, vae=False)   # the VAE runs on torch

    @property
    def on_fallback(self):
        return getattr(self.decoder, "on_fallback", None)

    @on_fallback.setter
    def on_fallback(self, fn) -> None:
        if hasattr(self.decoder, "on_fallback"):
            self.decoder.on_fallback = fn

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder.encode(image)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        return self.decoder.decode(z, quantize=quantize)

    @property
    def autoencoder(self):
        return getattr(self.decoder, "autoencoder", None)

    @property
    def tile_encode(self):
        return getattr(self.decoder, "tile_encode", None)

    @property
    def tile_decode(self):
        return getattr(self.decoder, "tile_decode", None)

    def describe(self) -> str:
        return (f"UNet: {self.upstream.describe()}; "
                f"encoder and decoder: {self.decoder.describe()}")


class TensorRTBackend:
    """TensorRT engines (``export.tensorrt``: fp16 by default, strongly typed from the fp16
    ONNX graphs) run on the restorer's CUDA device by ``export.trt_runtime``.

    The engines of the configured tile (UNet; encoder and decoder for latent models) are
    built or found when the backend is made; a UNet tile shape seen later (an image under
    one tile) gets its engine built on first sight, as the onnxruntime backend exports
    its graph. Engines are opened on first use or by :meth:`prepare`, one execution
    context each per backend (a service worker makes its own backend).

    max_batch: the largest batch the engines take (default the service's ``max_batch``);
    larger batches run in chunks. An encoder / decoder input outside the VAE engines'
    spatial range runs on the torch modules; a decode that gives NaN/Inf (fp16 overflow)
    is done again on the float32 torch decoder and counted (``on_fallback``).
    """

    name = "tensorrt"

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 tile: Optional[int] = None, cache: Optional[Path] = None,
                 max_batch: Optional[int] = None, precision: str = "fp16",
                 compute_capability: Optional[str] = None, module: Optional[str] = None,
                 optimization_level: Optional[int] = None):
        device = torch.device(restorer.device)
        # fail fast, before exporting any ONNX graph: module, GPU, a target it can build
        self.info = probe_tensorrt(compute_capability, module,
                                   device if device.type == "cuda" else None)
        if device.type != "cuda":
            raise BackendUnavailable(f"the tensorrt backend runs on a CUDA GPU; the model is "
                                     f"on {device} (use a cuda device, or --backend "
                                     f"onnxruntime or torch)")
        self.restorer = restorer.using(None)
        self.device = device
        self.precision = precision
        self.max_batch = int(max_batch or default_max_batch())
        self.builder = EngineBuilder(self.restorer, model_dir, cache, compute_capability,
                                     module, optimization_level, device=device)
        self.fallbacks = 0
        self.on_fallback: Optional[Callable[[str], None]] = None
        self._open: dict[str, object] = {}
        self._warned: set[str] = set()
        profiles = profiles_for(self.restorer, tile, self.max_batch, precision)
        self.paths = dict(zip((p.graph for p in profiles), self.builder.build(profiles)))

    def _engine(self, graph: str, size: Optional[tuple[int, int]] = None):
        """The opened engine of ``graph``; a UNet graph (``size``: its latent h, w) not
        built yet is built now."""
        if graph not in self._open:
            if graph not in self.paths:
                log.info("building the TensorRT engine for %dx%d latent tiles (first use)",
                         *size)
                profile = unet_profile(*size, self.max_batch, self.precision)
                self.paths[graph] = self.builder.build([profile])[0]
            self._open[graph] = open_engine(self.paths[graph], self.device,
                                            self.builder.device.module)
        return self._open[graph]

    def _unet(self, h: int, w: int):
        return self._engine(f"unet_t{h}" if h == w else f"unet_t{h}x{w}", (h, w))

    def unet_fn(self) -> Network:

        def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
            engine = self._unet(int(x.shape[-2]), int(x.shape[-1]))
            if lq is None:
                raise ExportError(f"{engine.path.name} needs the lq conditioning")
            inputs = {"x": x, "t": t, "lq": lq}
            if "mask" in engine.inputs:
                if mask is None:
                    raise ExportError(f"{engine.path.name} needs a mask")
                inputs["mask"] = mask
            return engine(**inputs)[0].to(x.dtype)
        return run

    def prepare(self, latent_tiles: "list[tuple[int, int]]", decoder: bool = True
                ) -> list[str]:
        """Build (when missing) and open the engines for these UNet tile shapes and the
        autoencoder now rather than on a request. Returns what was opened."""
        opened = []
        for h, w in latent_tiles:
            opened.append(self._unet(int(h), int(w)).path.name)
        if getattr(self.restorer, "latent", False):
            for graph in ("vae_encoder",) + (("vae_decoder",) if decoder else ()):
                opened.append(self._engine(graph).path.name)
        return opened

    def _torch_instead(self, graph: str, shape) -> None:
        if graph not in self._warned:
            self._warned.add(graph)
            log.info("%s input %s is outside its TensorRT engine's range; such inputs run "
                     "on the torch module", graph, list(shape))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        engine = self._engine("vae_encoder")
        if not engine.fits(image=image.shape):
            self._torch_instead("vae_encoder", image.shape)
            return self.restorer.autoencoder.encode(image)
        return engine(image=image)[0].float()

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        ae = self.restorer.autoencoder
        if not quantize:        # the graph always quantises; the unquantised path is torch's
            return ae.decode(z, quantize=False)
        engine = self._engine("vae_decoder")
        if not engine.fits(z=z.shape):
            self._torch_instead("vae_decoder", z.shape)
            return ae.decode(z, quantize=True)
        out = engine(z=z)[0].float()
        bad = decode_failure(out)
        if bad is not None:
            self.fallbacks += 1
            log.warning("TensorRT %s decode gave %s; decoding again in float32",
                        self.precision, bad)
            if self.on_fallback is not None:
                self.on_fallback(bad)
            out = ae.decode(z.float(), quantize=True)
        return out

    def describe(self) -> str:
        d = self.builder.device
        gpu = d.gpu_name or str(self.device)
        return (f"tensorrt ({d.module} {d.tensorrt_version}, {gpu}, sm {d.compute_capability}"
                f", {self.precision} engines, batch 1-{self.max_batch}, in "
                f"{self.builder.directory})")
