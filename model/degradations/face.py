"""GFPGAN-style blind face degradation (ResShift TPAMI, appendix eq. 28).

    y = [(x * k_sigma) downsampled by s + n_delta]_JPEG_q, resized back to x's size

Training ranges (``FACE_TRAIN``, ResShift ``faceir_gfpgan512_lpips.yaml``): kernel 41x41,
isotropic or anisotropic Gaussian with probability 1/2 each, sigma ~ U(0.1, 15),
theta ~ U(-pi, pi); s ~ U(0.8, 32) with bilinear resizing; Gaussian colour noise
sigma ~ U(0, 20)/255; JPEG quality ~ U(30, 100); resize back (bilinear); with
probability 0.01 both LQ and GT become gray. ``FACE_TEST`` is the CelebA test-set
synthesis: anisotropic, sigma ~ U(4, 16), theta ~ U(0, pi), s ~ U(1, 32), noise
U(1, 20), JPEG U(30, 70), no gray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .kernels import KernelSpec, mixed_kernel
from .noise import gaussian_noise
from .ops import as_image, filter2d, jpeg, quantize, resize, rgb_to_gray


@dataclass(frozen=True)
class FaceSpec:
    kernel: KernelSpec = KernelSpec(sizes=(41,), sinc_prob=0.0,
                                    type_probs=(0.5, 0.5, 0.0, 0.0, 0.0, 0.0),
                                    sigma_range=(0.1, 15.0))
    downsample_range: tuple[float, float] = (0.8, 32.0)
    noise_range: tuple[float, float] = (0.0, 20.0)        # 8-bit units
    jpeg_range: tuple[float, float] = (30.0, 100.0)
    gray_prob: float = 0.01


FACE_TRAIN = FaceSpec()
FACE_TEST = FaceSpec(
    kernel=KernelSpec(sizes=(41,), sinc_prob=0.0, type_probs=(0.0, 1.0, 0.0, 0.0, 0.0, 0.0),
                      sigma_range=(4.0, 16.0), rotation_range=(0.0, math.pi)),
    downsample_range=(1.0, 32.0), noise_range=(1.0, 20.0), jpeg_range=(30.0, 70.0),
    gray_prob=0.0)


@dataclass
class FacePair:
    """lq: degraded image at GT size; gt: the target (gray when the gray branch fired)."""

    lq: np.ndarray
    gt: np.ndarray
    params: dict


def face_degrade_pair(gt: np.ndarray, rng: np.random.Generator,
                      spec: FaceSpec = FACE_TRAIN) -> FacePair:
    """Degrade an aligned face (HxWx3 [0, 1]); LQ has the GT's size, on the 8-bit grid."""
    img = as_image(gt)
    h, w = img.shape[:2]
    drawn = mixed_kernel(rng, int(rng.choice(np.asarray(spec.kernel.sizes))), spec.kernel)
    out = filter2d(img, drawn.kernel)
    s = float(rng.uniform(*spec.downsample_range))
    out = resize(out, (max(1, int(h / s)), max(1, int(w / s))), "bilinear")
    sigma = float(rng.uniform(*spec.noise_range))
    out = gaussian_noise(out, sigma / 255.0, False, rng)
    quality = int(round(float(rng.uniform(*spec.jpeg_range))))
    out = jpeg(out, quality)
    out = np.clip(resize(out, (h, w), "bilinear"), 0.0, 1.0)
    gray = bool(rng.uniform() < spec.gray_prob)
    target = img
    if gray:
        out = np.repeat(rgb_to_gray(out)[..., None], 3, axis=2)
        target = np.repeat(rgb_to_gray(img)[..., None], 3, axis=2).astype(np.float32)
    params = {"kernel": drawn.kind, **drawn.params, "downsample": s, "noise": sigma,
              "jpeg": quality, "gray": gray}
    return FacePair(quantize(out), target, params)


def face_degrade(gt: np.ndarray, rng: np.random.Generator,
                 spec: FaceSpec = FACE_TRAIN) -> np.ndarray:
    """The LQ image only (see ``face_degrade_pair``)."""
    return face_degrade_pair(gt, rng, spec).lq
