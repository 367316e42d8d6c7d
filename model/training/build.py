"""Networks for training: a fresh UNet from the recipe (or one to fine-tune), and the
frozen autoencoder of latent models."""

from __future__ import annotations

import copy
from typing import Optional

import torch

from ..checkpoint import load_into
from ..config import ModelConfig, config_from_official
from ..directory import build_networks, load
from ..errors import ConfigError
from ..nets.autoencoder import VQAutoencoder
from ..nets.unet import SwinUNet
from .config import ModelSection


def build_training_model(section: ModelSection, name: str, seed: int
                         ) -> tuple[ModelConfig, SwinUNet, Optional[VQAutoencoder]]:
    """(config, UNet to train, frozen autoencoder or None), on the CPU.

    ``section.init_from`` is a model dir, or a training checkpoint (``.pt``, a
    ``resume.pt``): a second stage starts from that run's EMA weights with this
    section's diffusion settings (for example a changed noise schedule).
    """
    if section.init_from and str(section.init_from).endswith(".pt"):
        return _from_training_checkpoint(section, name, seed)
    if section.init_from:
        restorer = load(section.init_from)
        cfg = copy.deepcopy(restorer.config)
        cfg.diffusion.update(section.diffusion or {})
        unet, autoencoder = restorer.unet, restorer.autoencoder
        cfg.provenance = {"initialised_from": str(section.init_from)}
        cfg.metrics = {}
    else:
        official = {"model": {"params": dict(section.unet)},
                    "autoencoder": {"params": dict(section.autoencoder)} if section.autoencoder
                    else None,
                    "diffusion": {"params": dict(section.diffusion)}}
        cfg = config_from_official(official, name=name)
        torch.manual_seed(int(seed))
        unet, autoencoder = build_networks(cfg)
        if cfg.spec.predict_type == "residual":
            # A residual predictor whose last conv starts at zero predicts y_0 - 0 = y_0:
            # training starts from the bicubic baseline and can only be pulled away
            # from it by the data, instead of first unlearning a random residual.
            last = unet.out[-1]
            torch.nn.init.zeros_(last.weight)
            torch.nn.init.zeros_(last.bias)
        if autoencoder is not None:
            if not section.autoencoder_checkpoint:
                raise ConfigError("latent model: set model.autoencoder_checkpoint")
            load_into(autoencoder, section.autoencoder_checkpoint, "autoencoder")
    cfg.name, cfg.task = name, section.task
    cfg.scale = int(cfg.diffusion.get("sf", section.scale))
    if section.description:
        cfg.description = section.description
    if cfg.latent != bool(autoencoder is not None and cfg.diffusion.get("latent_flag", True)):
        raise ConfigError("latent_flag and the autoencoder section disagree")
    if autoencoder is not None:
        autoencoder.eval()
        for p in autoencoder.parameters():
            p.requires_grad_(False)
    unet.train()
    return cfg, unet, autoencoder


def _from_training_checkpoint(section: ModelSection, name: str, seed: int
                              ) -> tuple[ModelConfig, SwinUNet, Optional[VQAutoencoder]]:
    from .checkpoint import load_checkpoint

    state = load_checkpoint(section.init_from)
    earlier = dict((state.get("config") or {}).get("model") or {})
    if not (earlier.get("unet") or earlier.get("init_from")) or "ema" not in state:
        raise ConfigError(f"{section.init_from} is not a training checkpoint of this project "
                          "(no model section or EMA weights)")
    # a stage started from an earlier stage rebuilds that one first (its file must exist)
    base = ModelSection(**{**earlier,
                           "diffusion": {**earlier.get("diffusion", {}),
                                         **(section.diffusion or {})},
                           "description": section.description or earlier.get("description", ""),
                           "task": section.task, "scale": section.scale})
    cfg, unet, autoencoder = build_training_model(base, name, seed)
    unet.load_state_dict(state["ema"])
    cfg.provenance = {"initialised_from": {"checkpoint": str(section.init_from),
                                           "step": int(state.get("step", 0))}}
    return cfg, unet, autoencoder
