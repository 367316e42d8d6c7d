"""The three released presets import end to end: a checkpoint with the official file's
layout (every key and shape of diffir_realsr_presets.json, duplicate keys holding their
primary's tensor, the twelve schedule buffers in float32 as the official DDPM module
registers them) under ``params_ema``, through ``model.import_diffir``, then one tiny
forward of exactly scale x size. Random seeded weights, 25M parameters per preset."""

from __future__ import annotations

import gc

import pytest
import torch

import model
from model.diffir.checkpoint import primary_key
from model.diffir.config import load_diffir_config
from model.diffir.schedule import BUFFER_NAMES, BUFFER_PREFIX, linear_betas, schedule_buffers


def official_checkpoint(preset: dict, cfg, seed: int = 0) -> dict:
    """``{"params_ema": state}`` in the official layout of ``preset``.

    Weights ~ N(0, 0.02^2) (seeded; small so that the random network stays finite);
    ``diffusion.model.*`` / ``diffusion.condition.*`` are the very tensors of
    ``denoise.*`` / ``condition.*``; ``diffusion.<buffer>`` the configured linear
    schedule as float32 (T,) tensors.
    """
    gen = torch.Generator().manual_seed(seed)
    buffers = schedule_buffers(linear_betas(cfg.timesteps, cfg.linear_start, cfg.linear_end))
    layout = [(key, tuple(shape)) for key, shape in preset["state_dict_layout"]]
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout:
        buffer = key[len(BUFFER_PREFIX):] if key.startswith(BUFFER_PREFIX) else None
        if buffer in BUFFER_NAMES:
            state[key] = buffers[buffer].float()
        elif primary_key(key) == key:
            state[key] = torch.randn(shape, generator=gen).mul_(0.02)
    for key, shape in layout:
        if key not in state:                    # a duplicate: its primary's tensor
            state[key] = state[primary_key(key)]
    assert all(tuple(state[k].shape) == shape for k, shape in layout)
    return {"params_ema": state}


@pytest.mark.parametrize("name", ["realsr_x4", "realsr_x2", "realsr_x1"])
def test_released_preset_imports_and_runs(diffir_presets, name):
    preset = diffir_presets[name]
    cfg = load_diffir_config({"type": "DiffIRS2", **preset["config"]})
    ckpt = official_checkpoint(preset, cfg)
    state = ckpt["params_ema"]
    assert sum(primary_key(k) != k for k in state) > 0        # duplicates are present
    r = model.import_diffir({"type": "DiffIRS2", **preset["config"]}, ckpt)
    try:
        assert sum(p.numel() for p in r.network.parameters()) == preset["parameters"]
        ours = r.network.state_dict()
        for key in ("G.patch_embed.proj.weight", "denoise.resmlp.0.weight",
                    "condition.mlp.0.weight"):
            assert torch.equal(ours[key], state[key])
        assert torch.equal(r.schedule.coef1, state[BUFFER_PREFIX + "posterior_mean_coef1"])
        gen = torch.Generator().manual_seed(1)
        lq = torch.rand(1, 3, 7, 10, generator=gen)              # odd: padded, then cropped
        with torch.inference_mode():
            sr = r.sample(lq, torch.randn(1, 256, generator=gen))
        assert sr.shape == (1, 3, 7 * cfg.scale, 10 * cfg.scale)
        assert torch.isfinite(sr).all()
    finally:
        del r, ckpt, state
        gc.collect()
