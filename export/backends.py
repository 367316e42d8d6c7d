"""Runtime backends: where a restorer's networks run, behind one small interface.

A :class:`Backend` runs the UNet on a batch (as the sampler's denoiser callable,
``model.sampler``), the VQGAN encoder and the decoder. The one sampler and the
restorer's pre/post-processing stay the same for every backend::

    backend = create_backend("onnxruntime", restorer, model_dir="models/realsr_v3")
    image = restorer.using(backend).restore(lq, seed=1)

``torch``       the restorer's own modules (CPU or CUDA).
``onnxruntime`` sessions over MODEL_DIR/onnx/ graphs (``export.store``: exported and
                checked on first use; the UNet graph of each tile shape in use); CUDA
                execution provider when onnxruntime has it and the restorer is on CUDA,
                CPU otherwise.
``tensorrt``    engines (``export.tensorrt``): selection and cache keys only so far;
                raises ``BackendUnavailable`` saying what is missing.
``auto``        the fastest usable one, see :func:`choose_backend` (onnxruntime on
                this CPU: measured faster than torch float32; on a bf16 CPU with the
                decoder on torch bf16, :class:`SplitBackend`).

Precision (:data:`PRECISIONS`, :func:`resolve_precision`) is what the torch-run
networks use: ``auto`` is bf16 on CPUs with AMX-BF16 / AVX512-BF16, fp32 elsewhere.

The tiled VAE (images larger than one VAE tile) shares GroupNorm statistics across
tiles through hooks on the torch modules, so it always runs on torch; a backend's
encoder / decoder runs images that fit one VAE tile (``Restorer._vae``).

DiffIR models take torch or onnxruntime; their onnxruntime backend answers
``forward(lq, noise)`` and ``dirformer(lq, ipr)`` instead (``export.diffir_backend``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Callable, Optional, Protocol

import torch

from model.sampler import Denoiser

from .errors import BackendUnavailable
from .store import OnnxStore

log = logging.getLogger("resshift.export")

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
ORT_INSTALL = ("pip install 'resshift-service[onnx]' (CPU) or 'resshift-service[gpu]' "
               "(onnxruntime-gpu)")
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
PRECISIONS = ("auto", "fp32", "bf16", "bf16-all")
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
    """(fp32 | bf16 | bf16-all, why). ``auto``: bf16 on a CPU with native bf16 kernels
    (AMX-BF16 or AVX512-BF16 in :func:`cpu_flags`), fp32 elsewhere (emulated bf16 is
    slower than fp32; CUDA half precision is TensorRT's job)."""
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; use one of "
                                 f"{', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision, "asked for"
    if torch.device(device).type != "cpu":
        return "fp32", f"not a CPU ({device})"
    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if found:
        return "bf16", f"the CPU has {' and '.join(found)}"
    return "fp32", f"the CPU has neither {' nor '.join(BF16_CPU_FLAGS)}"


class Backend(Protocol):
    """Where the networks run. Tensors in and out live on the restorer's device."""

    name: str

    def denoiser(self) -> Denoiser:
        """The UNet as ``f(x_scaled, t, lq, mask) -> x0`` (BxCxhxw batches)."""

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW in [-1, 1] -> latent z (no quantisation)."""

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Latent -> Bx3xHxW image in [-1, 1] (not clamped)."""

    def describe(self) -> str:
        """One line for logs and the CLI: name, device / provider, precision."""


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
    """The restorer's own torch modules, in float32 or under bfloat16 autocast.

    Precisions (:data:`PRECISIONS`), all with float32 inputs and outputs:

    ``fp32``      plain float32.
    ``bf16``      ``torch.autocast(device, bfloat16)`` with channels-last activations
                  (AMX / AVX512-BF16 kernels) for what stays within 40 dB of float32:
                  the VQGAN decoder after the codebook lookup, and the UNet of
                  pixel-space models. Everything upstream of a codebook (encoder, UNet
                  of latent models) stays float32: bf16's 0.4 % rounding there flips
                  nearest-codebook choices, which the decoded image shows (measured on
                  the small reference model, RealSet80 64 -> 256 crops: 19 dB with
                  only the UNet in bf16, 20 dB with only the encoder, 19-22 dB with
                  all three, 45 dB with only the decoder; the demo's pixel-space UNet
                  in bf16: 56-58 dB).
    ``bf16-all``  bf16 for the UNet, encoder and decoder (the speed ceiling; fails the
                  40 dB bound on latent models, see above).

    Always float32: GroupNorm statistics (``GroupNorm32``, autocast's fp32 list) and
    the codebook nearest-neighbour lookup (run outside autocast).
    """

    name = "torch"

    def __init__(self, restorer, precision: str = "fp32"):
        if precision not in PRECISIONS[1:]:
            raise BackendUnavailable(f"unknown torch precision {precision!r}; use one of "
                                     f"{', '.join(PRECISIONS[1:])}")
        self.restorer = restorer.using(None) if hasattr(restorer, "using") else restorer
        self.precision = precision
        latent = bool(getattr(self.restorer, "latent", False))
        full = precision == "bf16-all"
        self.bf16_unet = full or (precision == "bf16" and not latent)
        self.bf16_encoder = full and latent
        self.bf16_decoder = precision != "fp32" and latent
        self.fallbacks = 0                 # reduced-precision decodes redone in float32
        self.on_fallback: Optional[Callable[[str], None]] = None

    def _autocast(self):
        return torch.autocast(self.restorer.device.type, dtype=torch.bfloat16)

    @staticmethod
    def _cl(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x

    def denoiser(self) -> Denoiser:
        run_fp32 = self.restorer.denoiser()
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
            return ae.encode(image)
        with self._autocast():
            return ae.encode(self._cl(image)).float().contiguous()

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        ae = self.restorer.autoencoder
        if not self.bf16_decoder:
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

    def describe(self) -> str:
        if self.precision == "fp32":
            return f"torch ({self.restorer.device}, float32)"
        parts = [n for n, on in (("UNet", self.bf16_unet), ("encoder", self.bf16_encoder),
                                 ("decoder", self.bf16_decoder)) if on]
        return (f"torch ({self.restorer.device}, bfloat16 autocast + channels-last for "
                f"{', '.join(parts) or 'nothing'}, float32 otherwise)")


def ort_providers(device: torch.device) -> list[str]:
    """CUDA then CPU when onnxruntime has the CUDA provider and the restorer is on a
    GPU; CPU otherwise. BackendUnavailable without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable(f"the onnxruntime backend needs onnxruntime and onnx; "
                                 f"install with {ORT_INSTALL}")
    import onnxruntime

    cuda = CUDA_EP in onnxruntime.get_available_providers() and device.type == "cuda"
    return [CUDA_EP, CPU_EP] if cuda else [CPU_EP]


class OrtSessions:
    """onnxruntime sessions over a store that exports and checks graphs on demand, one
    session per graph, opened on first use. Subclasses pick the store."""

    name = "onnxruntime"
    store_class: type = OnnxStore     # subclasses with other graphs give their own store

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 threads: Optional[int] = None, cache: Optional[Path] = None):
        if importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(f"the onnxruntime backend exports graphs with the onnx "
                                     f"package; install with {ORT_INSTALL}")
        self.providers = ort_providers(restorer.device)
        self.restorer = restorer.using(None)
        self.store = self.store_class(self.restorer, model_dir, cache)
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def _session(self, key: str, path_fn):
        from .ort import OrtGraph

        if key not in self._sessions:
            self._sessions[key] = OrtGraph(path_fn(), self.threads, self.providers)
        return self._sessions[key]


class OnnxRuntimeBackend(OrtSessions):
    """onnxruntime sessions over the restorer's checked ONNX graphs (float32).

    model_dir: where the restorer came from (its ``onnx/`` folder is used or filled);
    None or a bundled / read-only model: the per-user cache (``export.paths``).
    """

    store_class = OnnxStore

    def denoiser(self) -> Denoiser:
        from .ort import OnnxDenoiser

        per_shape: dict[tuple[int, int], OnnxDenoiser] = {}
        predict_type = self.restorer.predict_type

        def run(x: torch.Tensor, t: torch.Tensor, lq, mask) -> torch.Tensor:
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if (h, w) not in per_shape:
                graph = self._session(f"unet{h}x{w}", lambda: self.store.unet(h, w))
                per_shape[(h, w)] = OnnxDenoiser(graph, predict_type)
            return per_shape[(h, w)](x, t, lq, mask)
        return run

    def prepare(self, latent_tiles: "list[tuple[int, int]]", decoder: bool = True
                ) -> list[str]:
        """Export (when missing), check and open the graphs for these UNet tile shapes and
        the autoencoder, now rather than on a request. Returns what was opened."""
        opened = []
        for h, w in latent_tiles:
            self._session(f"unet{h}x{w}", lambda h=h, w=w: self.store.unet(h, w))
            opened.append(f"unet {h}x{w}")
        if getattr(self.restorer, "latent", False):
            self._session("encoder", self.store.encoder)
            opened.append("vae_encoder")
            if decoder:
                self._session("decoder", self.store.decoder)
                opened.append("vae_decoder")
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
    """The UNet and encoder on one backend, the decoder on another: on a bf16 CPU the
    fastest mix within 40 dB of float32 (onnxruntime float32 upstream of the codebook,
    torch bf16 decoder after it; see :func:`choose_backend`)."""

    name = "split"

    def __init__(self, upstream: Backend, decoder: Backend):
        self.upstream, self.decoder = upstream, decoder

    def denoiser(self) -> Denoiser:
        return self.upstream.denoiser()

    def prepare(self, latent_tiles: "list[tuple[int, int]]") -> list[str]:
        return self.upstream.prepare(latent_tiles, decoder=False)   # decodes on torch

    @property
    def on_fallback(self):
        return getattr(self.decoder, "on_fallback", None)

    @on_fallback.setter
    def on_fallback(self, fn) -> None:
        if hasattr(self.decoder, "on_fallback"):
            self.decoder.on_fallback = fn

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.upstream.encode(image)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        return self.decoder.decode(z, quantize=quantize)

    def describe(self) -> str:
        return (f"UNet and encoder: {self.upstream.describe()}; "
                f"decoder: {self.decoder.describe()}")


class TensorRTBackend:
    """fp16 TensorRT engines. Building them is what raises here until issue 4's device
    work lands (``export.tensorrt.build_engines``)."""

    name = "tensorrt"

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 tile: Optional[int] = None, cache: Optional[Path] = None):
        from .tensorrt import build_engines, probe_tensorrt

        probe_tensorrt()        # fail fast, before exporting any ONNX graph
        self.engines = build_engines(restorer, model_dir, tile, cache=cache)
        raise BackendUnavailable("running TensorRT engines is not implemented yet (issue 4)")


def choose_backend(restorer, precision: str = "fp32") -> tuple[str, str]:
    """(backend name, why) for ``auto``: tensorrt when usable, else onnxruntime (with the
    CUDA provider when the restorer is on a GPU and onnxruntime has it), else torch.

    On the CPU onnxruntime float32 was measured faster than eager torch float32 (one
    thread, this repository's 2-core VMs): full-size realsr_v3 UNet step at a 64 latent
    tile 0.53 s vs 0.80 s, VQGAN decoder 64 -> 256 3.1 s vs 5.0 s; the demo model's
    64 -> 256 restore 0.63 s vs 1.23 s, same image. With ``precision`` bf16 (a CPU with
    AMX / AVX512-BF16) ``create_backend`` pairs onnxruntime's encoder and UNet with
    torch's bf16 decoder (:class:`SplitBackend`): full-size realsr_v3 64 -> 256, 2
    threads, 3.2 s vs torch float32 4.5 s, torch bf16 4.1 s, onnxruntime alone 3.8 s
    (1 thread: 5.4 s vs torch float32 9.4 s). torch.compile of the float32 encoder
    (inductor, freezing) took 1.87 s vs onnxruntime's 1.7 s and eager 2.46 s (1 thread)
    after a 39 s compile, so it is not used. The demo's pixel-space UNet: onnxruntime
    float32 0.027 s per 16 -> 64 image vs torch bf16 0.035 s: onnxruntime stays its pick.
    """
    from .tensorrt import unavailable_reason

    if getattr(restorer, "family", "resshift") == "diffir":
        from .diffir_backend import choose_diffir_backend
        return choose_diffir_backend(restorer)
    if getattr(restorer, "family", "resshift") != "resshift":
        return "torch", f"{restorer.family} models run on torch only"
    try:
        providers = ort_providers(restorer.device)
    except BackendUnavailable:
        providers = []
    has_onnx = importlib.util.find_spec("onnx") is not None
    if restorer.device.type != "cuda":
        if providers and has_onnx:
            if precision.startswith("bf16") and getattr(restorer, "latent", False):
                return "onnxruntime", ("on a bf16 CPU onnxruntime float32 encoder and UNet "
                                       "with the torch bf16 decoder are the fastest mix "
                                       "within 40 dB of float32 (measured)")
            return "onnxruntime", ("on the CPU onnxruntime float32 runs these models about "
                                   "1.5-2x faster than torch float32 (measured)")
        return "torch", f"on the CPU without onnxruntime and onnx ({ORT_INSTALL})"
    why_not_trt = unavailable_reason()
    if why_not_trt is None:
        return "tensorrt", "TensorRT and a CUDA GPU are available"
    if CUDA_EP in providers and has_onnx:
        return "onnxruntime", f"onnxruntime has the CUDA provider; tensorrt: {why_not_trt}"
    return "torch", f"tensorrt: {why_not_trt}; onnxruntime has no CUDA provider"


def create_backend(name: str, restorer, model_dir: str | Path | None = None,
                   tile: Optional[int] = None, cache: Optional[Path] = None,
                   precision: str = "fp32") -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) for ``restorer``; ``auto`` logs
    what it picked and why. Raises ``BackendUnavailable`` saying what to install.

    precision (one of :data:`PRECISIONS`; ``auto`` logs what it resolved to): what the
    torch-run networks use. With ``bf16`` the onnxruntime backend of a latent model
    decodes on torch bf16 (:class:`SplitBackend`); its graphs stay float32."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    asked = precision
    precision, why_precision = resolve_precision(precision, restorer.device)
    family = getattr(restorer, "family", "resshift")
    if family != "resshift" and precision != "fp32":
        if asked != "auto":
            raise BackendUnavailable(f"precision {asked} is for ResShift models; {family} "
                                     f"models run in fp32 (--precision fp32)")
        precision, why_precision = "fp32", f"{family} models run in fp32"
    if asked == "auto":
        log.info("precision auto -> %s: %s", precision, why_precision)
    if name == "auto":
        name, why = choose_backend(restorer, precision)
        log.info("backend auto -> %s: %s", name, why)
    if name == "torch":
        return TorchBackend(restorer, precision)
    if family == "diffir" and name == "onnxruntime":
        from .diffir_backend import DiffIROnnxBackend
        return DiffIROnnxBackend(restorer, model_dir, cache=cache)
    if family != "resshift":
        which = "torch or onnxruntime backends" if family == "diffir" else "torch backend"
        raise BackendUnavailable(f"{family} models run on the {which} only (--backend torch)")
    if name == "onnxruntime":
        ort = OnnxRuntimeBackend(restorer, model_dir, cache=cache)
        if precision.startswith("bf16") and getattr(restorer, "latent", False):
            return SplitBackend(ort, TorchBackend(restorer, "bf16"))
        return ort
    return TensorRTBackend(restorer, model_dir, tile, cache=cache)
