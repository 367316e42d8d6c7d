"""Tiny random models (fast on one CPU thread), the tiny training recipe, and the relative
error the parity tests compare tensors with."""

from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64 so the comparison adds no rounding of its own."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


# -- ResShift --------------------------------------------------------------------------------
def tiny_official(task: str = "sr", steps: int = 4) -> dict:
    """An official-style config for a very small random model: latent unit 8 (window 4,
    two UNet levels), so tiles of 16 latent pixels are legal and a 16x16 request costs a
    few tens of milliseconds of network time."""
    unet = dict(image_size=16, in_channels=3, model_channels=32, out_channels=3,
                attention_resolutions=[64, 32, 16, 8], dropout=0, channel_mult=[1, 2],
                num_res_blocks=[1, 1], conv_resample=True, dims=2, use_fp16=False,
                num_head_channels=16, use_scale_shift_norm=True, resblock_updown=False,
                swin_depth=1, swin_embed_dim=32, window_size=4, mlp_ratio=2, cond_lq=True,
                lq_size=16)
    sf = 4
    if task == "inpaint":
        unet.update(cond_mask=True, lq_size=64)
        sf = 1
    elif task == "face":
        unet.update(lq_size=64)
        sf = 1
    ae = dict(embed_dim=3, n_embed=32, ddconfig=dict(
        double_z=False, z_channels=3, resolution=512 if task == "face" else 256,
        in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1, 1], num_res_blocks=1,
        attn_resolutions=[], dropout=0.0, padding_mode="zeros"))
    diffusion = dict(sf=sf, schedule_name="exponential", schedule_kwargs={"power": 0.3},
                     etas_end=0.99, steps=steps, min_noise_level=0.2, kappa=2.0,
                     predict_type="xstart", normalize_input=True, latent_flag=True)
    return {"model": {"params": unet}, "autoencoder": {"params": ae},
            "diffusion": {"params": diffusion}}


def tiny_restorer(task: str = "sr", seed: int = 0):
    """A ResShift Restorer of ``tiny_official(task)`` with seeded random weights."""
    from model.config import config_from_official
    from model.directory import build_networks
    from model.restorer import Restorer
    torch.manual_seed(seed)
    cfg = config_from_official(tiny_official(task))
    cfg.name = f"tiny-{task}"
    unet, ae = build_networks(cfg)
    return Restorer(cfg, unet, ae)


# -- DiffIR ----------------------------------------------------------------------------------
def tiny_diffir_config(scale: int) -> dict:
    """A DiffIR ``network_g`` for a very small random model."""
    return {"type": "DiffIRS2", "n_encoder_res": 1, "dim": 8, "scale": scale,
            "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8],
            "ffn_expansion_factor": 2.2, "LayerNorm_type": "WithBias"}


def tiny_diffir(scale: int, seed: int = 0):
    """A DiffIRRestorer of ``tiny_diffir_config(scale)`` with seeded random weights (and
    the configured schedule)."""
    from model.diffir.config import load_diffir_config
    from model.diffir.network import build_network
    from model.diffir.restorer import DiffIRRestorer
    from model.diffir.schedule import make_schedule
    cfg = load_diffir_config(tiny_diffir_config(scale))
    torch.manual_seed(seed)
    net = build_network(cfg)
    return DiffIRRestorer(cfg, net, make_schedule(cfg.timesteps, cfg.linear_start,
                                                  cfg.linear_end))


# -- training --------------------------------------------------------------------------------
TINY_UNET = dict(image_size=32, lq_size=32, in_channels=3, out_channels=3, model_channels=32,
                 channel_mult=[1, 2], num_res_blocks=[0, 1], attention_resolutions=[16],
                 swin_depth=1, swin_embed_dim=32, num_head_channels=32, window_size=8,
                 mlp_ratio=2, dropout=0.0, conv_resample=True, dims=2, use_fp16=False,
                 use_scale_shift_norm=True, resblock_updown=False, cond_lq=True)
TINY_DIFFUSION = dict(sf=4, schedule_name="exponential", schedule_kwargs={"power": 0.3},
                      etas_end=0.99, min_noise_level=0.1, kappa=0.5, steps=4,
                      predict_type="xstart", normalize_input=True, latent_flag=False)


def tiny_recipe(tmp_path, image_dir, **train) -> dict:
    """A pixel-space x4 training recipe on ``image_dir`` (the (train, val) folders of the
    training tests' ``image_dir`` fixture); ``train`` overrides keys of its "train" part."""
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
