"""A graph that fails its export check runs on torch instead of failing the restore.

``export.onnx`` checks every graph it writes against the float32 torch module and
raises ``ExportCheckError`` when a measure is outside its limit
(``export.fidelity.CHECK_LIMITS``). For a user's restore or a service worker that is
no reason to stop: :class:`TorchFallback` wraps an onnxruntime backend, and the part
(UNet, encoder or decoder) whose graph failed runs on the restorer's torch modules
from then on. One warning per failed part names the graph and the measured number;
the failed graph is not asked for again (a new export would fail the same way).
"""

from __future__ import annotations

import logging
import math

from .backends import TorchBackend
from .errors import ExportCheckError

log = logging.getLogger("resshift.export")


def _part(graph: str) -> str:
    if graph.startswith("vae_encoder"):
        return "encoder"
    if graph.startswith("vae_decoder"):
        return "decoder"
    return "unet"


def describe_failure(exc: ExportCheckError) -> str:
    """The failed measure of a check, for a log line: "PSNR 31.20 dB < 35 dB"."""
    value, limit = exc.value, exc.tolerance
    if exc.measure == "psnr_db":
        shown = f"{value:.2f}" if math.isfinite(value) else str(value)
        return f"PSNR {shown} dB < limit {limit:g} dB"
    if exc.measure == "code_flips":
        return f"code flips {100 * value:.2f} % > limit {100 * limit:g} %"
    return f"relative error {value:.3e} >= limit {limit:.0e}"


class TorchFallback:
    """``inner`` (an onnxruntime backend over an ``OnnxStore``) with torch taking over
    any part whose graph fails its check. Other attributes are ``inner``'s."""

    def __init__(self, inner, restorer, precision: str = "fp32"):
        self.inner = inner
        self.torch = TorchBackend(restorer, precision)
        self.name = inner.name
        self.failed: dict[str, str] = {}     # part -> why (the warning's text)

    def __getattr__(self, key):
        if key == "inner":            # not set yet (copy/pickle): no recursion
            raise AttributeError(key)
        return getattr(self.inner, key)

    def _fail(self, part: str, exc: ExportCheckError) -> None:
        if part in self.failed:
            return
        why = f"{exc.graph}: {describe_failure(exc)}"
        self.failed[part] = why
        log.warning("onnxruntime graph check failed (%s); the %s runs on torch instead",
                    why, part)

    def _guarded(self, part: str, run_ort, run_torch):
        # a check failing for another part's graph (exported alongside) marks that
        # part, and this one is tried again
        for _ in range(3):
            if part in self.failed:
                break
            try:
                return run_ort()
            except ExportCheckError as exc:
                self._fail(_part(exc.graph), exc)
        return run_torch()

    def unet_fn(self):
        ort_run, torch_run = self.inner.unet_fn(), self.torch.unet_fn()

        def run(x, t, lq, mask):
            return self._guarded("unet", lambda: ort_run(x, t, lq, mask),
                                 lambda: torch_run(x, t, lq, mask))
        return run

    def encode(self, image):
        return self._guarded("encoder", lambda: self.inner.encode(image),
                             lambda: self.torch.encode(image))

    def decode(self, z, quantize: bool = True):
        return self._guarded("decoder", lambda: self.inner.decode(z, quantize),
                             lambda: self.torch.decode(z, quantize))

    def prepare(self, latent_tiles, vae: bool = True) -> list[str]:
        """Export and check the graphs (``inner.store``), then let ``inner`` open the
        sessions of those that passed. Returns what was opened; failed parts are listed
        as running on torch."""
        store = self.inner.store
        latent = bool(getattr(self.inner.restorer, "latent", False))
        checks = [("unet", lambda h=h, w=w: store.unet(int(h), int(w)))
                  for h, w in latent_tiles]
        if latent and vae:
            checks += [("encoder", store.encoder), ("decoder", store.decoder)]
        for part, check in checks:
            if part not in self.failed:
                try:
                    check()
                except ExportCheckError as exc:
                    self._fail(part, exc)
        opened: list[str] = []
        if not (latent and vae and "encoder" in self.failed):
            # the inner backend opens the encoder of a latent model with its VAE; without
            # a usable encoder graph its other sessions open on first use instead
            tiles = [] if "unet" in self.failed else list(latent_tiles)
            opened = list(self.inner.prepare(tiles, vae=vae and "decoder" not in self.failed))
        return opened + [f"{part} on torch" for part in self.failed]

    def describe(self) -> str:
        text = self.inner.describe()
        if self.failed:
            text += f"; on torch after a failed graph check: {', '.join(self.failed)}"
        return text
