"""A tiny pixel-space recipe and a folder of small images for the training tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

TINY_UNET = dict(image_size=32, lq_size=32, in_channels=3, out_channels=3, model_channels=32,
                 channel_mult=[1, 2], num_res_blocks=[0, 1], attention_resolutions=[16],
                 swin_depth=1, swin_embed_dim=32, num_head_channels=32, window_size=8,
                 mlp_ratio=2, dropout=0.0, conv_resample=True, dims=2, use_fp16=False,
                 use_scale_shift_norm=True, resblock_updown=False, cond_lq=True)
TINY_DIFFUSION = dict(sf=4, schedule_name="exponential", schedule_kwargs={"power": 0.3},
                      etas_end=0.99, min_noise_level=0.1, kappa=0.5, steps=4,
                      predict_type="xstart", normalize_input=True, latent_flag=False)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Recipes and ``eval --threads`` set torch's thread count; give it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (4.0 + c) + seed) * np.cos(yy / 6.0 - c) for c in range(3)], -1)
    return np.clip(127 + 80 * base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(photo(48, 40, 1)).save(root / "a.png")
    Image.fromarray(photo(40, 56, 2)).save(root / "sub" / "b.jpg")
    Image.fromarray(photo(20, 24, 3)).save(root / "small.png")      # smaller than the crop
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(photo(40, 40, 4)).save(val / "v.png")
    return root, val


def tiny_recipe(tmp_path, image_dir, **train) -> dict:
    root, val = image_dir
    recipe = {
        "name": "tiny", "seed": 3, "output": str(tmp_path / "model"),
        "work_dir": str(tmp_path / "run"),
        "model": {"task": "sr", "scale": 4, "autoencoder": None,
                  "unet": dict(TINY_UNET), "diffusion": dict(TINY_DIFFUSION)},
        "data": {"train": [str(root)], "val": [str(val)], "gt_size": 32,
                 "degradation": "resshift_test", "rescale_range": [0.5, 1.0],
                 "small_images": "pad", "val_size": 32, "val_images": 1},
        "train": {"steps": 4, "batch_size": 2, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1,
                  "ema_decay": 0.9, "checkpoint_every": 2, "val_every": 2, "log_every": 1,
                  "threads": 1},
    }
    for k, v in train.items():
        recipe["train"][k] = v
    return recipe
