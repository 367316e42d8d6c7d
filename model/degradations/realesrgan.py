"""The Real-ESRGAN two-stage degradation, as ResShift trains and tests with it.

Given a clean HxWx3 image in [0, 1] (the GT crop) it returns the LQ image of size
(H // sf) x (W // sf), rounded to 8 bit (Real-ESRGAN's second-order pipeline,
Wang et al. 2021):

1. first stage: blur with kernel 1 -> random resize (up / down / keep, mode from
   area / bilinear / bicubic) -> Gaussian or Poisson noise (colour or gray) -> JPEG;
2. second stage, only with ``second_order_prob``: blur with kernel 2 (with
   ``second_blur_prob``) -> random resize relative to the final size -> noise;
3. final block, always: with probability 1/2 [resize to 1/sf (random mode), final
   sinc filter] then JPEG, otherwise JPEG then [resize, sinc];
4. round to 8 bit.

Presets: ``RESSHIFT_TRAIN`` (ResShift's variant: second stage with probability 0.5,
kernel sizes 3..19 and 3..13, no sharpened GT), ``BASICSR_TRAIN`` (Real-ESRGAN's own:
always two stages, sizes 7..21) and ``RESSHIFT_TEST`` (the milder test-set synthesis of
the paper: one stage, sigma 0.2-0.8, noise 1-15 / 0.05-0.3, JPEG 70-95, then 80-100).
Kernel sizes follow ResShift's ``range(3, blur_kernel_size, 2)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .kernels import DrawnKernel, KernelSpec, random_final_sinc, random_kernel
from .noise import NoiseSpec, random_noise
from .ops import RESIZE_MODES, as_image, filter2d, jpeg, quantize, resize


@dataclass(frozen=True)
class StageSpec:
    """Resize, noise and JPEG settings of one stage.

    resize_probs: probabilities of (up, down, keep); up_range / down_range: the factor.
    """

    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    up_range: tuple[float, float] = (1.0, 1.5)
    down_range: tuple[float, float] = (0.15, 1.0)
    noise: NoiseSpec = NoiseSpec()
    jpeg_range: tuple[float, float] = (30.0, 95.0)


@dataclass(frozen=True)
class RealESRGANSpec:
    """Every probability and range of the pipeline (defaults: ResShift training)."""

    scale: int = 4
    kernel1: KernelSpec = KernelSpec()
    kernel2: KernelSpec = KernelSpec(sizes=tuple(range(3, 15, 2)), sigma_range=(0.2, 1.5))
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = tuple(range(3, 21, 2))
    stage1: StageSpec = StageSpec()
    stage2: StageSpec = StageSpec(
        resize_probs=(0.3, 0.4, 0.3), up_range=(1.0, 1.2), down_range=(0.3, 1.0),
        noise=NoiseSpec(sigma_range=(1.0, 25.0), poisson_range=(0.05, 2.5)),
        jpeg_range=(30.0, 95.0))
    second_order_prob: float = 0.5
    second_blur_prob: float = 0.8


RESSHIFT_TRAIN = RealESRGANSpec()

BASICSR_TRAIN = dataclasses.replace(
    RESSHIFT_TRAIN,
    kernel1=KernelSpec(sizes=tuple(range(7, 22, 2))),
    kernel2=KernelSpec(sizes=tuple(range(7, 22, 2)), sigma_range=(0.2, 1.5)),
    final_sinc_sizes=tuple(range(7, 22, 2)),
    second_order_prob=1.0)

RESSHIFT_TEST = RealESRGANSpec(
    kernel1=KernelSpec(sizes=tuple(range(3, 13, 2)), sinc_prob=0.0,
                       type_probs=(0.6, 0.4, 0.0, 0.0, 0.0, 0.0), sigma_range=(0.2, 0.8)),
    kernel2=KernelSpec(sizes=tuple(range(3, 7, 2)), sinc_prob=0.0,
                       type_probs=(0.6, 0.4, 0.0, 0.0, 0.0, 0.0), sigma_range=(0.2, 0.5)),
    final_sinc_prob=0.2,
    final_sinc_sizes=tuple(range(3, 13, 2)),
    stage1=StageSpec(up_range=(1.0, 1.5), down_range=(0.5, 1.0),
                     noise=NoiseSpec(sigma_range=(1.0, 15.0), poisson_range=(0.05, 0.3)),
                     jpeg_range=(70.0, 95.0)),
    stage2=StageSpec(resize_probs=(0.3, 0.4, 0.3), up_range=(1.0, 1.2), down_range=(0.3, 1.0),
                     noise=NoiseSpec(sigma_range=(1.0, 25.0), poisson_range=(0.05, 2.5)),
                     jpeg_range=(80.0, 100.0)),
    second_order_prob=0.0)


@dataclass
class DegradationTrace:
    """What a call drew (kernel kinds, resize choices, noise...), for logs and tests."""

    steps: list[tuple[str, dict]] = field(default_factory=list)

    def add(self, name: str, **params) -> None:
        self.steps.append((name, params))

    def names(self) -> list[str]:
        return [n for n, _ in self.steps]


def _random_resize(img: np.ndarray, stage: StageSpec, rng: np.random.Generator,
                   base: tuple[int, int], trace: DegradationTrace, tag: str) -> np.ndarray:
    kind = ("up", "down", "keep")[int(rng.choice(3, p=np.asarray(stage.resize_probs)))]
    if kind == "up":
        factor = float(rng.uniform(*stage.up_range))
    elif kind == "down":
        factor = float(rng.uniform(*stage.down_range))
    else:
        factor = 1.0
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
    trace.add(f"resize{tag}", kind=kind, factor=factor, mode=mode, size=size)
    return resize(img, size, mode)


def _jpeg(img: np.ndarray, q_range: tuple[float, float], rng: np.random.Generator,
          trace: DegradationTrace, tag: str) -> np.ndarray:
    quality = int(round(float(rng.uniform(*q_range))))
    trace.add(f"jpeg{tag}", quality=quality)
    return jpeg(np.clip(img, 0.0, 1.0), quality)


def realesrgan_degrade(gt: np.ndarray, rng: np.random.Generator,
                       spec: RealESRGANSpec = RESSHIFT_TRAIN,
                       trace: DegradationTrace | None = None) -> np.ndarray:
    """Degrade ``gt`` (HxWx3 float [0, 1], H and W multiples of ``spec.scale``).

    Returns the (H/sf)x(W/sf)x3 float32 LQ image on the 8-bit grid. Every random choice
    comes from ``rng`` in a fixed order, so a seeded generator gives the same LQ.
    """
    img = as_image(gt)
    trace = trace if trace is not None else DegradationTrace()
    h, w = img.shape[:2]
    sf = spec.scale
    final = (h // sf, w // sf)
    # kernels are drawn first, as the reference's dataset stage does
    k1: DrawnKernel = random_kernel(rng, spec.kernel1)
    k2: DrawnKernel = random_kernel(rng, spec.kernel2)
    ks: DrawnKernel = random_final_sinc(rng, spec.final_sinc_prob, spec.final_sinc_sizes)

    # first stage
    trace.add("blur1", kind=k1.kind, **k1.params)
    out = filter2d(img, k1.kernel)
    out = _random_resize(out, spec.stage1, rng, (h, w), trace, "1")
    out = random_noise(out, spec.stage1.noise, rng)
    trace.add("noise1")
    out = _jpeg(out, spec.stage1.jpeg_range, rng, trace, "1")

    # second stage
    if rng.uniform() < spec.second_order_prob:
        if rng.uniform() < spec.second_blur_prob:
            trace.add("blur2", kind=k2.kind, **k2.params)
            out = filter2d(out, k2.kernel)
        out = _random_resize(out, spec.stage2, rng, final, trace, "2")
        out = random_noise(out, spec.stage2.noise, rng)
        trace.add("noise2")

    # final block: [resize to 1/sf + sinc] and JPEG, in a random order
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    if rng.uniform() < 0.5:
        trace.add("final_resize", mode=mode, size=final)
        out = resize(out, final, mode)
        trace.add("final_sinc", kind=ks.kind, **ks.params)
        out = filter2d(out, ks.kernel)
        out = _jpeg(out, spec.stage2.jpeg_range, rng, trace, "2")
    else:
        out = _jpeg(out, spec.stage2.jpeg_range, rng, trace, "2")
        trace.add("final_resize", mode=mode, size=final)
        out = resize(out, final, mode)
        trace.add("final_sinc", kind=ks.kind, **ks.params)
        out = filter2d(out, ks.kernel)
    return quantize(out)


__all__ = ["StageSpec", "RealESRGANSpec", "RESSHIFT_TRAIN", "BASICSR_TRAIN", "RESSHIFT_TEST",
           "DegradationTrace", "realesrgan_degrade"]
