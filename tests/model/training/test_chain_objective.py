"""train.objective: chain: the loss is scored on what sampling returns."""

import pytest
import torch

from model.config import config_from_official
from model.directory import build_networks
from model.errors import ConfigError
from model.restorer import Restorer
from model.training.config import TrainConfig
from model.training.loss import chain_loss, make_targets
from model.training.trainer import Trainer
from tests.helpers.images import photo
from tests.helpers.models import TINY_DIFFUSION, TINY_UNET, tiny_recipe


def _pixel_restorer(noise_scale: float) -> Restorer:
    cfg = config_from_official({"model": {"params": dict(TINY_UNET)}, "autoencoder": None,
                                "diffusion": {"params": dict(TINY_DIFFUSION,
                                                             noise_scale=noise_scale)}})
    torch.manual_seed(0)
    unet, _ = build_networks(cfg)
    return Restorer(cfg, unet, None)


def _batch(seed: int = 0):
    gt = torch.stack([torch.from_numpy(photo(32, 32, seed=seed + i)).permute(2, 0, 1)
                      for i in range(2)]).float() / 127.5 - 1
    lq = torch.nn.functional.avg_pool2d(gt, 4)
    return gt, lq


@pytest.mark.parametrize("noise_scale", [0.0, 0.7])
def test_the_chain_loss_scores_what_sampling_returns(noise_scale):
    r = _pixel_restorer(noise_scale)
    gt, lq = _batch()
    targets = make_targets(r, gt, lq)
    noises = [torch.randn(targets.x0.shape, generator=torch.Generator().manual_seed(i))
              for i in range(r.schedule.num_steps + 1)]
    out = chain_loss(r.unet, r, targets, noises, relative=False)
    with torch.no_grad():
        sampled = r.sample(lq, noises=noises)       # scales the noises itself, as restore does
    assert out.mse == pytest.approx(float(((sampled - gt) ** 2).mean()), rel=1e-5)
    out.loss.backward()
    grads = [p.grad for p in r.unet.parameters() if p.grad is not None]
    assert grads and float(sum(g.abs().sum() for g in grads)) > 0


def test_chain_steps_lower_the_chain_loss_on_a_batch():
    r = _pixel_restorer(0.0)
    gt, lq = _batch(1)
    targets = make_targets(r, gt, lq)
    noises = [torch.zeros_like(targets.x0)] * (r.schedule.num_steps + 1)
    opt = torch.optim.Adam(r.unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = chain_loss(r.unet, r, targets, noises, relative=True)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses   # measured: 19.1 -> 1.2


def test_a_chain_recipe_trains_and_says_so_in_its_provenance(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir, objective="chain", loss="relative_l2", steps=2,
                         checkpoint_every=2, val_every=2)
    recipe["model"]["diffusion"]["noise_scale"] = 0.0
    trainer = Trainer(TrainConfig.from_dict(recipe), show_progress=False)
    path = trainer.run()
    import json
    meta = json.loads((path / "model.json").read_text())
    assert meta["diffusion"]["noise_scale"] == 0.0
    assert meta["provenance"]["loss"] == "relative L2 on the sampled chain's output"
    assert trainer.step == 2


def test_an_unknown_objective_is_refused(tmp_path, image_dir):
    with pytest.raises(ConfigError, match="train.objective must be 'timestep' or 'chain'"):
        TrainConfig.from_dict(tiny_recipe(tmp_path, image_dir, objective="unrolled"))
