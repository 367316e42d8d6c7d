"""Latent models train through the frozen autoencoder; ``--lpips-weights`` adds LPIPS."""

import json

import torch

from model.checkpoint import save_safetensors
from model.nets.autoencoder import VQAutoencoder
from model.training.config import TrainConfig
from model.training.lpips import LPIPS
from model.training.trainer import Trainer
from tests.helpers.models import tiny_recipe

TINY_AE = dict(embed_dim=3, n_embed=32, ddconfig=dict(
    double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=32,
    ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
    padding_mode="zeros"))


def test_latent_model_trains_with_a_frozen_autoencoder(tmp_path, image_dir):
    torch.manual_seed(0)
    ae = VQAutoencoder(**TINY_AE)
    save_safetensors(ae, tmp_path / "ae.safetensors")
    recipe = tiny_recipe(tmp_path, image_dir, steps=2, val_every=0, checkpoint_every=0)
    recipe["model"]["autoencoder"] = TINY_AE
    recipe["model"]["autoencoder_checkpoint"] = str(tmp_path / "ae.safetensors")
    recipe["model"]["unet"].update(image_size=16, lq_size=16)
    recipe["model"]["diffusion"]["latent_flag"] = True
    recipe["data"].update(gt_size=64, val=[])
    trainer = Trainer(TrainConfig.from_dict(recipe), show_progress=False)
    before = {k: v.clone() for k, v in trainer.restorer.autoencoder.state_dict().items()}
    path = trainer.run()
    after = trainer.restorer.autoencoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)        # frozen
    assert (path / "autoencoder.safetensors").is_file()
    meta = json.loads((path / "model.json").read_text())
    assert meta["provenance"]["space"] == "latent" and meta["autoencoder"]["embed_dim"] == 3


def test_lpips_weights_add_the_perceptual_term(tmp_path, image_dir, caplog):
    torch.manual_seed(0)
    net = LPIPS()
    state = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    state.update({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) * 0.1
                  for i, c in enumerate((64, 128, 256, 512, 512))})
    torch.save(state, tmp_path / "lpips_all.pth")
    recipe = tiny_recipe(tmp_path, image_dir, steps=1, val_every=0, checkpoint_every=0,
                         lpips_weight=0.5)
    recipe["data"]["val"] = []
    trainer = Trainer(TrainConfig.from_dict(recipe), show_progress=False,
                      lpips_weights=str(tmp_path / "lpips_all.pth"))
    path = trainer.run()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["lpips"] > 0
    assert json.loads((path / "model.json").read_text())["provenance"]["loss"] == "L2 + 0.5 LPIPS"


def test_without_lpips_weights_training_says_l2_only_once(tmp_path, image_dir, caplog):
    recipe = tiny_recipe(tmp_path, image_dir, steps=1, val_every=0, checkpoint_every=0)
    recipe["data"]["val"] = []
    with caplog.at_level("INFO", logger="resshift.train"):
        Trainer(TrainConfig.from_dict(recipe), show_progress=False).run()
    assert sum("L2 only" in r.message for r in caplog.records) == 1
