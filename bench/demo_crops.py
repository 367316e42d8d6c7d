"""Before / bicubic / after crops for docs/demo_model.md, all at the same displayed scale.

    python bench/demo_crops.py                       # the bundled demo, the crops below
    python bench/demo_crops.py --model models/realsr_v3 --out-dir /tmp/crops

Each crop is a 56x56 LQ window of a RealSet80 photo shown three times at 4x: the input
itself (each pixel repeated 4x4, so its noise and JPEG blocks stay visible), the input
upsampled bicubically, and the model's output (seed 0, untiled).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (file in realset80, x, y of the LQ crop, name of the PNG)
CROPS = [("Lincoln.png", 48, 24, "demo_lincoln.png"),
         ("butterfly.png", 90, 60, "demo_butterfly.png"),
         ("tiger.png", 230, 100, "demo_tiger.png"),
         ("penguin1.png", 100, 60, "demo_penguin.png"),
         ("dog2.png", 80, 40, "demo_dog.png"),
         ("46.jpg", 60, 40, "demo_46.png")]
SIZE = 56


def bicubic_x4(lq: np.ndarray, scale: int) -> np.ndarray:
    from model.degradations.ops import bicubic_upsample
    up = bicubic_upsample(lq.astype(np.float32) / 255.0, scale)
    return np.clip(np.round(up * 255.0), 0, 255).astype(np.uint8)


def nearest_x(lq: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(lq, scale, axis=0), scale, axis=1)


def side_by_side(*panels: np.ndarray, gap: int = 6) -> np.ndarray:
    h = panels[0].shape[0]
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = np.full((h, width, 3), 255, np.uint8)
    left = 0
    for p in panels:
        canvas[:, left:left + p.shape[1]] = p
        left += p.shape[1] + gap
    return canvas


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo", help="model directory or 'demo'")
    p.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "realset80")
    p.add_argument("--out-dir", type=Path, default=REPO / "docs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import model
    from model.imageio import decode_image
    torch.set_num_threads(1)
    r = model.load(args.model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, x, y, out in CROPS:
        img = decode_image(args.images / name).pixels
        lq = np.ascontiguousarray(img[y:y + SIZE, x:x + SIZE])
        restored = r.restore(lq, seed=args.seed, tile=0)
        panels = (nearest_x(lq, r.scale), bicubic_x4(lq, r.scale), restored)
        Image.fromarray(side_by_side(*panels)).save(args.out_dir / out)
        print(f"{out}: {name} LQ crop ({x}, {y}) {SIZE}x{SIZE} -> {restored.shape[1]}x{restored.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
