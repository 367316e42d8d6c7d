"""predict_type: the residual adapter, its checks, and that training uses it."""

import numpy as np
import pytest
import torch

from model.config import ModelSpec, config_from_official
from model.denoiser import to_x0
from model.directory import build_networks
from model.errors import ConfigError
from model.restorer import Restorer
from tests.helpers.models import TINY_DIFFUSION, TINY_UNET


def _cfg(kind="residual", **unet):
    diffusion = dict(TINY_DIFFUSION, predict_type=kind)
    return config_from_official({"model": {"params": dict(TINY_UNET, **unet)},
                                 "autoencoder": None, "diffusion": {"params": diffusion}})


def test_to_x0():
    out, y = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    assert torch.equal(to_x0(out, y, "xstart"), out)
    assert torch.equal(to_x0(out, y, "residual"), y - out)


def test_residual_needs_a_pixel_model_conditioned_on_y():
    assert ModelSpec.from_config(_cfg()).predict_type == "residual"
    with pytest.raises(ConfigError, match="lq_size == image_size"):
        ModelSpec.from_config(_cfg(lq_size=64))
    with pytest.raises(ConfigError, match="not supported"):
        ModelSpec.from_config(_cfg("epsilon"))
    with pytest.raises(ConfigError, match="lq_size == image_size"):
        Restorer(_cfg(lq_size=64), None, None)


def test_a_residual_network_that_outputs_zero_restores_bicubic():
    torch.manual_seed(0)
    cfg = _cfg()
    unet, _ = build_networks(cfg)
    with torch.no_grad():                       # f == 0  =>  x0 = y0 at every step
        for p in unet.out.parameters():
            p.zero_()
    r = Restorer(cfg, unet, None)
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    from model.degradations.ops import bicubic_upsample, to_uint8
    expected = to_uint8(bicubic_upsample(img.astype(np.float32) / 255, 4))
    out = r.restore(img, seed=0, tile=0)
    # kappa * noise is added and removed again by the posterior; only rounding differs
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
