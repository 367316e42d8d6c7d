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
                this CPU: measured faster than torch float32).

The tiled VAE (images larger than one VAE tile) shares GroupNorm statistics across
tiles through hooks on the torch modules, so it always runs on torch; a backend's
encoder / decoder runs images that fit one VAE tile (``Restorer._vae``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional, Protocol

import torch

from model.sampler import Denoiser

from .errors import BackendUnavailable

log = logging.getLogger("resshift.export")

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
ORT_INSTALL = ("pip install 'resshift-service[onnx]' (CPU) or 'resshift-service[gpu]' "
               "(onnxruntime-gpu)")
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


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


class TorchBackend:
    """The restorer's own torch modules."""

    name = "torch"

    def __init__(self, restorer):
        self.restorer = restorer.using(None) if hasattr(restorer, "using") else restorer

    def denoiser(self) -> Denoiser:
        return self.restorer.denoiser()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.restorer.autoencoder.encode(image)

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        return self.restorer.autoencoder.decode(z, quantize=quantize)

    def describe(self) -> str:
        return f"torch ({self.restorer.device}, float32)"


def ort_providers(device: torch.device) -> list[str]:
    """CUDA then CPU when onnxruntime has the CUDA provider and the restorer is on a
    GPU; CPU otherwise. BackendUnavailable without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable(f"the onnxruntime backend needs onnxruntime and onnx; "
                                 f"install with {ORT_INSTALL}")
    import onnxruntime

    cuda = CUDA_EP in onnxruntime.get_available_providers() and device.type == "cuda"
    return [CUDA_EP, CPU_EP] if cuda else [CPU_EP]


class OnnxRuntimeBackend:
    """onnxruntime sessions over the restorer's checked ONNX graphs (float32).

    model_dir: where the restorer came from (its ``onnx/`` folder is used or filled);
    None or a bundled / read-only model: the per-user cache (``export.paths``).
    """

    name = "onnxruntime"

    def __init__(self, restorer, model_dir: str | Path | None = None,
                 threads: Optional[int] = None, cache: Optional[Path] = None):
        from .store import OnnxStore

        if importlib.util.find_spec("onnx") is None:
            raise BackendUnavailable(f"the onnxruntime backend exports graphs with the onnx "
                                     f"package; install with {ORT_INSTALL}")
        self.providers = ort_providers(restorer.device)
        self.restorer = restorer.using(None)
        self.store = OnnxStore(self.restorer, model_dir, cache)
        self.threads = threads
        self._sessions: dict[str, object] = {}

    def _session(self, key: str, path_fn):
        from .ort import OrtGraph

        if key not in self._sessions:
            self._sessions[key] = OrtGraph(path_fn(), self.threads, self.providers)
        return self._sessions[key]

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


def choose_backend(restorer) -> tuple[str, str]:
    """(backend name, why) for ``auto``: tensorrt when usable, else onnxruntime (with the
    CUDA provider when the restorer is on a GPU and onnxruntime has it), else torch.

    On the CPU onnxruntime float32 was measured faster than eager torch float32 (one
    thread, this repository's 2-core VMs): full-size realsr_v3 UNet step at a 64 latent
    tile 0.53 s vs 0.80 s, VQGAN decoder 64 -> 256 3.1 s vs 5.0 s; the demo model's
    64 -> 256 restore 0.63 s vs 1.23 s, same image. Revisit when torch's bf16 CPU path
    (issue 4) lands.
    """
    from .tensorrt import unavailable_reason

    if getattr(restorer, "family", "resshift") != "resshift":
        return "torch", f"{restorer.family} models run on torch only"
    try:
        providers = ort_providers(restorer.device)
    except BackendUnavailable:
        providers = []
    has_onnx = importlib.util.find_spec("onnx") is not None
    if restorer.device.type != "cuda":
        if providers and has_onnx:
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
                   tile: Optional[int] = None, cache: Optional[Path] = None) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) for ``restorer``; ``auto`` logs
    what it picked and why. Raises ``BackendUnavailable`` saying what to install."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "auto":
        name, why = choose_backend(restorer)
        log.info("backend auto -> %s: %s", name, why)
    if name == "torch":
        return TorchBackend(restorer)
    if getattr(restorer, "family", "resshift") != "resshift":
        raise BackendUnavailable(f"{restorer.family} models run on the torch backend only "
                                 f"(--backend torch)")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(restorer, model_dir, cache=cache)
    return TensorRTBackend(restorer, model_dir, tile, cache=cache)
