"""How close a graph's output is to the float32 torch module, in the terms that matter
for a restored image, and the limits every exported graph is checked against.

Measures (pure functions of tensors; the reference is always the float32 torch output):

* :func:`image_psnr` -- decoded images in [-1, 1] mapped to the 8-bit range
  (``(x + 1) * 127.5``, clipped to [0, 255], not rounded), PSNR with peak 255;
* :func:`range_psnr` -- PSNR with the reference's own value range (max - min) as peak:
  UNet ``x0`` and latents, whose scale depends on the model;
* :func:`code_flips` -- share of latent positions whose nearest codebook entry differs
  from the reference's: the one thing downstream of the encoder / UNet that the
  decoder sees (it quantises first), so a few flips are visible, many are not noise.

:data:`CHECK_LIMITS` is the table ``export.onnx.check_graph`` applies, per graph kind and
precision. The float32 limits are far below what a correct export gives (onnxruntime vs
torch differ by about 1e-6 relative: full-size random-weight UNet 140 dB, decoder
118 dB) and above a wrong one (the demo UNet against a copy with its first convolution
perturbed: 31 dB); they hold for full-size models, whose longer accumulations reach
relative errors of 1e-4 in the decoder (the old relative-error bound failed there).
The float16 limits sit below the full-size float16 graphs' measured values with
margin (docs/benchmarks.md, "fp16 graphs") and above what a broken conversion gives.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

# (kind, precision) -> {measure: limit}; "psnr_db" is a lower bound, "code_flips" an
# upper bound (a share in [0, 1]). Kinds without an entry (DiffIR) use relative error.
CHECK_LIMITS: dict[tuple[str, str], dict[str, float]] = {
    ("unet", "fp32"): {"psnr_db": 60.0},
    ("unet", "fp16"): {"psnr_db": 35.0},
    ("vae_encoder", "fp32"): {"psnr_db": 60.0, "code_flips": 0.01},
    ("vae_encoder", "fp16"): {"psnr_db": 35.0, "code_flips": 0.10},
    ("vae_decoder", "fp32"): {"psnr_db": 50.0},
    ("vae_decoder", "fp16"): {"psnr_db": 35.0},
}
LOWER_BOUNDS = ("psnr_db",)      # measures that must be at least their limit


def _psnr(mse: float, peak: float) -> float:
    if mse <= 0:
        return math.inf
    if peak <= 0 or not math.isfinite(mse):
        return -math.inf if not math.isfinite(mse) else 0.0
    return 10.0 * math.log10(peak * peak / mse)


def to_8bit(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] image -> float64 values in [0, 255] (unrounded)."""
    return ((image.detach().double() + 1.0) * 127.5).clamp(0.0, 255.0)


def image_psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR (dB) of decoded images in [-1, 1], in the 8-bit range (peak 255). NaN/Inf
    anywhere gives -inf."""
    image, reference = torch.as_tensor(image), torch.as_tensor(reference)
    if image.shape != reference.shape or not bool(torch.isfinite(image).all()):
        return -math.inf
    mse = float(((to_8bit(image) - to_8bit(reference)) ** 2).mean())
    return _psnr(mse, 255.0)


def range_psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR (dB) with the reference's value range (max - min) as the peak."""
    x, reference = torch.as_tensor(x).double(), torch.as_tensor(reference).double()
    if x.shape != reference.shape or not bool(torch.isfinite(x).all()):
        return -math.inf
    mse = float(((x - reference) ** 2).mean())
    return _psnr(mse, float(reference.max() - reference.min()))


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row (squared L2, float64) per latent position of
    ``z`` (B x E x H x W) -> B x H x W."""
    b, e, h, w = z.shape
    flat = z.detach().double().permute(0, 2, 3, 1).reshape(-1, e)
    codes = codebook.detach().double()
    dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t()
            + codes.pow(2).sum(1)[None, :])
    return dist.argmin(1).reshape(b, h, w)


def code_flips(z: torch.Tensor, reference: torch.Tensor, codebook: torch.Tensor) -> float:
    """Share of latent positions whose nearest codebook entry differs between ``z`` and
    ``reference`` (0 = the decoder sees the same codes)."""
    if z.shape != reference.shape or not bool(torch.isfinite(z).all()):
        return 1.0
    a, b = nearest_codes(z, codebook), nearest_codes(reference, codebook)
    return float((a != b).double().mean())


def graph_measures(kind: str, out: torch.Tensor, ref: torch.Tensor,
                   codebook: Optional[torch.Tensor] = None) -> dict[str, float]:
    """The measures :data:`CHECK_LIMITS` bounds for a graph kind."""
    if kind == "vae_decoder":
        return {"psnr_db": image_psnr(out, ref)}
    if kind == "vae_encoder":
        found = {"psnr_db": range_psnr(out, ref)}
        if codebook is not None:
            found["code_flips"] = code_flips(out, ref, codebook)
        return found
    if kind == "unet":
        return {"psnr_db": range_psnr(out, ref)}
    return {}


def limits_for(kind: str, precision: str,
               table: Optional[Mapping[tuple[str, str], Mapping[str, float]]] = None
               ) -> Optional[dict[str, float]]:
    """The limits of a graph kind at a precision (None: not in the table)."""
    found = (CHECK_LIMITS if table is None else table).get((kind, precision))
    return None if found is None else dict(found)


def violations(measures: Mapping[str, float], limits: Mapping[str, float]
               ) -> list[tuple[str, float, float]]:
    """(measure, value, limit) for each measure on the wrong side of its limit (NaN
    always is)."""
    bad = []
    for key, limit in limits.items():
        if key not in measures:
            continue
        value = measures[key]
        ok = (value >= limit) if key in LOWER_BOUNDS else (value <= limit)
        if not ok or value != value:
            bad.append((key, value, limit))
    return bad


def uint8_psnr(a, b) -> float:
    """PSNR (dB, peak 255) of two uint8 images (the restore outputs)."""
    a = torch.as_tensor(a).double()
    b = torch.as_tensor(b).double()
    if a.shape != b.shape:
        return -math.inf
    return _psnr(float(((a - b) ** 2).mean()), 255.0)


def worst(values, lower_is_worse: bool = True) -> float:
    """The worst of several measurements (min for PSNR, max for flip shares)."""
    values = [float(v) for v in values]
    return min(values) if lower_is_worse else max(values)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` = [(key, header), ...]; floats
    shown with 2 decimals (dB) or as percentages (keys ending in ``flips``)."""
    def cell(key: str, value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if key.endswith("flips"):
                return f"{100 * value:.2f} %"
            return "inf" if math.isinf(value) else f"{value:.2f}"
        return str(value)
    head = "| " + " | ".join(h for _, h in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(k, r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])
