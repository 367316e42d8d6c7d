"""Image <-> tensor conversions and padding shared by the restorers and the steppers
of both families (pure functions of their inputs)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad BxCxHxW on the right/bottom up to multiples of ``multiple``.

    Pads larger than the image (tiny inputs) are done as repeated reflections.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    while ph > 0 or pw > 0:
        step_h, step_w = min(ph, x.shape[-2] - 1), min(pw, x.shape[-1] - 1)
        if step_h <= 0 and ph > 0 or step_w <= 0 and pw > 0:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            break
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        ph, pw = ph - step_h, pw - step_w
    return x


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A CPU tensor on ``device``. To CUDA it goes through page-locked (pinned) memory
    with an asynchronous copy: the DMA engine reads pinned pages directly, and the copy
    queues on the current stream instead of stalling the thread (the caching host
    allocator keeps the pinned block until the copy is done). Elsewhere a plain ``to``."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_model_range(image: np.ndarray, device) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [-1, 1]. To a GPU the uint8 pixels travel
    (a quarter of float32's bytes, pinned) and are converted there."""
    device = torch.device(device)
    if device.type == "cuda":
        host = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
        host.numpy()[...] = image
        t = host.to(device, non_blocking=True).to(torch.float32)
    else:
        t = torch.tensor(image, device=device, dtype=torch.float32)
    return (t.permute(2, 0, 1).unsqueeze(0) / 255.0 - 0.5) / 0.5


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1x3xHxW in [-1, 1] -> HxWx3 uint8 (clamped, rounded). From a GPU the uint8
    result comes back through a pinned buffer; the stream is synchronized before the
    pixels are read, and they are copied out so no pinned memory outlives the call."""
    x = (x.detach().float().clamp(-1.0, 1.0) * 0.5 + 0.5)[0]
    pixels = (x.permute(1, 2, 0) * 255.0).round().to(torch.uint8)
    if pixels.device.type != "cuda":
        return pixels.cpu().numpy()
    host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(pixels, non_blocking=True)
    torch.cuda.current_stream(pixels.device).synchronize()
    return host.numpy().copy()


def to_unit_range(image: np.ndarray, device) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1] (DiffIR's input range)."""
    t = torch.tensor(image, device=device, dtype=torch.float32)
    return t.permute(2, 0, 1).unsqueeze(0) / 255.0


def unit_to_uint8(x: torch.Tensor) -> np.ndarray:
    """1x3xHxW in [0, 1] -> HxWx3 uint8 (clamped, rounded)."""
    x = x.detach().float().clamp(0.0, 1.0)[0]
    return (x.permute(1, 2, 0) * 255.0).round().to(torch.uint8).cpu().numpy()
