"""A few training steps end to end, and exact resume from a checkpoint."""

import json

import numpy as np
import pytest
import torch
import yaml

import model
from model.errors import ConfigError
from model.training.checkpoint import latest_checkpoint, load_checkpoint
from model.training.config import TrainConfig
from model.training.trainer import Trainer
from tests.helpers.models import tiny_recipe


def _train(recipe, **kw):
    trainer = Trainer(TrainConfig.from_dict(recipe), show_progress=False, **kw)
    return trainer, trainer.run()


def _assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_short_run_writes_a_model_directory_with_provenance(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir)
    recipe["data"]["val"].append("dead-leaves:1")   # listed second: validation uses the file
    trainer, path = _train(recipe)
    assert path == tmp_path / "model"
    meta = json.loads((path / "model.json").read_text())
    prov = meta["provenance"]
    assert prov["steps"] == 4 and prov["samples_seen"] == 8 and prov["space"] == "pixel"
    assert prov["data"]["train_stats"] == {"found": 3, "used": 3, "padded": 1,
                                           "skipped_small": 0, "unreadable": 0}
    assert prov["data"]["degradation"] == "resshift_test" and prov["loss"] == "L2"
    val_file, val_leaves = prov["data"]["val"]
    assert val_file["file"].endswith("v.png") and val_leaves["generator"] == "dead-leaves"
    assert prov["wall_time_s"] > 0 and prov["config"]["train"]["steps"] == 4
    val = meta["metrics"]["validation"]
    assert set(val["model"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert sum("val" in r for r in log) == 2                # step 2 and the final one
    # the directory loads and restores at x4
    r = model.load(path)
    out = r.restore(np.zeros((9, 11, 3), np.uint8) + 90, seed=0)
    assert out.shape == (36, 44, 3)


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, image_dir):
    straight = tiny_recipe(tmp_path / "a", image_dir)
    _train(straight)
    interrupted = tiny_recipe(tmp_path / "b", image_dir)
    first, path = _train(interrupted, stop_after=2)
    assert path is None and first.step == 2
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_0000002.pt"
    second, path = _train(interrupted, resume="auto")
    assert path is not None and second.step == 4

    a = load_checkpoint(latest_checkpoint(tmp_path / "a" / "run"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "b" / "run"))
    assert a["step"] == b["step"] == 4
    for key in ("unet", "ema", "optimizer"):
        _assert_same(a[key], b[key], key)
    def losses(p):
        lines = (tmp_path / p / "run" / "log.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]
    la, lb = losses("a"), losses("b")
    assert len(la) == 4
    assert la == lb


def test_existing_checkpoints_need_resume_and_configs_must_match(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir)
    _train(recipe, stop_after=2)
    with pytest.raises(ConfigError, match="--resume"):
        _train(recipe)
    other = tiny_recipe(tmp_path, image_dir)
    other["model"]["diffusion"]["kappa"] = 2.0
    with pytest.raises(ConfigError, match="another model"):
        _train(other, resume="auto")


def test_skip_policy_counts_small_images(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir, steps=1, val_every=0, checkpoint_every=0)
    recipe["data"]["small_images"] = "skip"
    recipe["data"]["val"] = []
    trainer, path = _train(recipe)
    stats = json.loads((path / "model.json").read_text())["provenance"]["data"]["train_stats"]
    assert stats["skipped_small"] == 1 and stats["used"] == 2


def test_grad_accumulation_and_the_cli(tmp_path, image_dir, capsys):
    from resshift.cli import main
    recipe = tiny_recipe(tmp_path, image_dir, steps=2, grad_accum=2, val_every=0)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(cfg), "-q", "--output", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    prov = json.loads((tmp_path / "out" / "model.json").read_text())["provenance"]
    assert prov["samples_seen"] == 2 * 2 * 2
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    # --steps 0 is refused, not read as "no override" (which ran the recipe's whole length)
    assert main(["train", str(cfg), "-q", "--steps", "0", "--output", str(tmp_path / "o0"),
                 "--work-dir", str(tmp_path / "w0")]) == 2
    assert not (tmp_path / "o0").exists() and not (tmp_path / "w0").exists()


def test_recipe_typos_are_errors():
    with pytest.raises(ConfigError, match="unknown keys in train"):
        TrainConfig.from_dict({"model": {"unet": {"a": 1}, "diffusion": {"b": 1}},
                               "data": {"train": ["x"]}, "train": {"stepz": 3}})
    with pytest.raises(ConfigError, match="data.train"):
        TrainConfig.from_dict({"model": {"unet": {"a": 1}, "diffusion": {"b": 1}}})
    with pytest.raises(ConfigError, match="data.rot90 must be true or false"):
        TrainConfig.from_dict({"model": {"unet": {"a": 1}, "diffusion": {"b": 1}},
                               "data": {"train": ["x"], "rot90": "maybe"}})


def test_residual_models_train_and_validate_through_the_adapter(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir, steps=2, checkpoint_every=0)
    recipe["model"]["diffusion"]["predict_type"] = "residual"
    trainer, path = _train(recipe)
    val = json.loads((path / "model.json").read_text())["metrics"]["validation"]
    assert np.isfinite(val["model"]["psnr"])
    assert json.loads((path / "model.json").read_text())["diffusion"]["predict_type"] == "residual"


def test_one_checkpoint_file_is_replaced_in_place_and_resumed(tmp_path, image_dir):
    """``train.checkpoint_file``: a run that spans machines keeps one resume file (in a
    repository) instead of step-numbered ones, and resumes from it exactly."""
    single = tmp_path / "resume.pt"
    recipe = tiny_recipe(tmp_path / "b", image_dir, checkpoint_file=str(single))
    recipe["data"]["degradation"] = {"resshift_test": 2, "bicubic": 1}
    first, path = _train(recipe, stop_after=3)
    assert path is None and single.is_file() and load_checkpoint(single)["step"] == 3
    assert latest_checkpoint(tmp_path / "b" / "run") is None     # no step_N.pt files
    with pytest.raises(ConfigError, match="--resume"):
        _train(recipe)
    second, path = _train(recipe, resume="auto")
    assert second.step == 4 and load_checkpoint(single)["step"] == 4

    straight = tiny_recipe(tmp_path / "a", image_dir)
    straight["data"]["degradation"] = {"resshift_test": 2, "bicubic": 1}
    _train(straight)
    a = load_checkpoint(latest_checkpoint(tmp_path / "a" / "run"))
    _assert_same(a["unet"], load_checkpoint(single)["unet"], "unet")


def test_a_second_stage_starts_from_a_training_checkpoint_with_a_changed_schedule(
        tmp_path, image_dir):
    """``model.init_from: <resume.pt>``: stage two takes stage one's EMA weights and
    architecture, overrides only what its diffusion section names, and says where it
    started in the model's provenance."""
    single = tmp_path / "stage1.pt"
    first = tiny_recipe(tmp_path / "one", image_dir, checkpoint_file=str(single))
    _train(first, stop_after=2)
    stage1 = load_checkpoint(single)

    second = tiny_recipe(tmp_path / "two", image_dir, steps=1, checkpoint_every=0)
    second["model"] = {"task": "sr", "scale": 4, "init_from": str(single),
                       "diffusion": {"etas_end": 0.9999}}
    trainer = Trainer(TrainConfig.from_dict(second), show_progress=False)
    for name, value in stage1["ema"].items():               # starts from stage one's EMA
        assert torch.equal(trainer.unet.state_dict()[name], value), name
    assert trainer.model_config.diffusion["etas_end"] == 0.9999
    assert trainer.model_config.diffusion["kappa"] == first["model"]["diffusion"]["kappa"]
    assert trainer.restorer.schedule.etas[-1] == pytest.approx(0.9999 ** 2)
    path = trainer.run()
    prov = json.loads((path / "model.json").read_text())["provenance"]
    assert prov["initialised_from"] == {"checkpoint": str(single), "step": 2}

    # a third stage from the second rebuilds the chain (stage one's file must exist)
    mid = tmp_path / "stage2.pt"
    second["train"]["checkpoint_file"] = str(mid)
    second["work_dir"] = str(tmp_path / "two-b")
    Trainer(TrainConfig.from_dict(second), show_progress=False).run()
    third = tiny_recipe(tmp_path / "three", image_dir, steps=1, checkpoint_every=0)
    third["model"] = {"task": "sr", "scale": 4, "init_from": str(mid), "diffusion": {}}
    t3 = Trainer(TrainConfig.from_dict(third), show_progress=False)
    for name, value in load_checkpoint(mid)["ema"].items():
        assert torch.equal(t3.unet.state_dict()[name], value), name
    assert t3.model_config.diffusion["etas_end"] == 0.9999

    # a finished stage's file cut to its weights starts the next stage, but is no run to
    # resume
    state = load_checkpoint(mid)
    torch.save({k: state[k] for k in ("step", "config", "ema")}, mid)
    assert torch.equal(next(iter(Trainer(TrainConfig.from_dict(third), show_progress=False)
                                 .unet.state_dict().values())),
                       next(iter(state["ema"].values())))
    with pytest.raises(ConfigError, match="finished stage"):
        _train(second, resume="auto")

    # a model dir is not a checkpoint; a checkpoint must hold a model section
    bad = tmp_path / "bad.pt"
    torch.save({"step": 1, "ema": {}}, bad)
    second["model"]["init_from"] = str(bad)
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        Trainer(TrainConfig.from_dict(second), show_progress=False)


def test_relative_l2_weighs_each_pair_by_its_bicubic_error(tmp_path, image_dir):
    """``train.loss: relative_l2`` divides each pair's squared error by its baseline's
    (y_0 against x_0, plus a floor), so a pair with a poor baseline counts less; the
    logged ``mse`` stays the plain mean."""
    from model.training.loss import RELATIVE_FLOOR, Targets, diffusion_loss
    recipe = tiny_recipe(tmp_path, image_dir, steps=2, checkpoint_every=0)
    recipe["train"]["loss"] = "relative_l2"
    trainer = Trainer(TrainConfig.from_dict(recipe), show_progress=False)
    r = trainer.restorer
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((2, 3, 32, 32), generator=gen) * 2 - 1
    y0 = x0.clone()
    y0[1] += 0.3                                    # the second pair's baseline is poor
    lq = torch.nn.functional.interpolate(y0, scale_factor=0.25, mode="area")
    targets = Targets(x0, y0, r.conditioning(lq, y0) if r.spec.cond_lq else None)
    t = torch.tensor([1, 1])
    noise = torch.randn(x0.shape, generator=gen)
    plain = diffusion_loss(trainer.unet, r, targets, t, noise)
    rel = diffusion_loss(trainer.unet, r, targets, t, noise, relative=True)
    with torch.no_grad():
        from model.sampler import q_sample
        pred = r.denoiser(trainer.unet)(q_sample(x0, y0, r.schedule, t, noise), t,
                                        targets.cond, None)
    err = ((pred - x0) ** 2).flatten(1).mean(1)
    base = ((y0 - x0) ** 2).flatten(1).mean(1)
    assert plain.loss.item() == pytest.approx(err.mean().item(), rel=1e-5)
    assert rel.loss.item() == pytest.approx((err / (base + RELATIVE_FLOOR)).mean().item(),
                                            rel=1e-5)
    assert rel.mse == pytest.approx(plain.mse, rel=1e-6)
    path = trainer.run()
    assert json.loads((path / "model.json").read_text())["provenance"]["loss"] == "relative L2"
    recipe["train"]["loss"] = "l1"
    with pytest.raises(ConfigError, match="train.loss"):
        TrainConfig.from_dict(recipe)


def test_the_shipped_recipes_load_and_their_stages_chain():
    """Every recipe under configs/ passes validation, and a stage's init_from names a
    file of the repository whose stored recipe is the previous stage's."""
    from model.training.config import load_train_config
    from tests.helpers.paths import REPO
    recipes = sorted((REPO / "configs").glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = load_train_config(path)
        start = cfg.model.init_from
        if start and start.endswith(".pt"):
            state = load_checkpoint(REPO / start)
            assert "ema" in state and state["config"]["train"]["checkpoint_file"] == start, path
