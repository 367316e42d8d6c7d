"""``resshift eval`` on a few small images: degraded on the fly and paired folders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import model
from resshift.cli import main
from model.config import config_from_official
from model.directory import build_networks
from model.restorer import Restorer
from model.training.evaluate import EvalPair, evaluate, name_rng
from tests.helpers.images import photo
from tests.helpers.models import TINY_DIFFUSION, TINY_UNET


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = config_from_official({"model": {"params": dict(TINY_UNET)}, "autoencoder": None,
                                "diffusion": {"params": dict(TINY_DIFFUSION)}}, name="tiny")
    cfg.provenance["data"] = {"degradation": "bicubic"}
    unet, _ = build_networks(cfg)
    return model.save(Restorer(cfg, unet, None), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture
def gt_dir(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(photo(34, 40, 1)).save(gt / "one.png")      # 34 -> mod-cropped to 32
    Image.fromarray(photo(32, 32, 2)).save(gt / "two.png")
    return gt


def test_eval_degrades_gt_with_a_named_degradation(tmp_path, tiny_model_dir, gt_dir, capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--gt", str(gt_dir),
                 "--degradation", "resshift_test", "--seed", "3", "--json", str(out), "-q",
                 "--save-dir", str(tmp_path / "imgs")])
    assert code == 0
    table = capsys.readouterr().out
    assert "one" in table and "mean of 2" in table and "model - bicubic" in table
    report = json.loads(out.read_text())
    assert report["count"] == 2 and report["crop_border"] == 4 and report["scale"] == 4
    assert report["degradation"] == "resshift_test" and report["seed"] == 3
    for row in report["images"]:
        assert set(row["model"]) == set(row["bicubic"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert Image.open(tmp_path / "imgs" / "model" / "one.png").size == (40, 32)
    # same seed, same numbers
    again = tmp_path / "again.json"
    main(["eval", "--model", str(tiny_model_dir), "--gt", str(gt_dir), "--degradation",
          "resshift_test", "--seed", "3", "--json", str(again), "-q"])
    assert json.loads(again.read_text())["mean"] == report["mean"]


def test_eval_defaults_to_the_models_training_degradation(tiny_model_dir, gt_dir, capsys):
    assert main(["eval", "--model", str(tiny_model_dir), "--gt", str(gt_dir), "-q",
                 "--crop-border", "2"]) == 0
    assert "mean of 2" in capsys.readouterr().out


def test_eval_on_paired_folders(tmp_path, tiny_model_dir, gt_dir):
    lq = tmp_path / "lq"
    lq.mkdir()
    for name in ("one", "two"):
        img = np.asarray(Image.open(gt_dir / f"{name}.png"))
        Image.fromarray(img[::4, ::4][:8, :8]).save(lq / f"{name}.png")
    out = tmp_path / "pairs.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--lq", str(lq), "--gt", str(gt_dir),
                 "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["pairs"] == "folders" and report["count"] == 2
    assert main(["eval", "--model", str(tiny_model_dir), "--lq", str(tmp_path / "none"),
                 "--gt", str(gt_dir), "-q"]) == 2


def test_evaluate_scores_a_perfect_restorer_as_infinite_psnr():
    gt = photo(32, 32, 5)
    pair = EvalPair("x", gt, gt[::4, ::4])
    report = evaluate(lambda lq, seed: gt, [pair], scale=4)
    assert report.mean("model")["psnr"] == float("inf") and report.mean("model")["ssim"] == 1.0
    assert report.mean("bicubic")["psnr"] < 40


def test_degradation_seed_depends_on_the_name_only():
    a = name_rng(0, "img").uniform()
    assert a == name_rng(0, "img").uniform() and a != name_rng(0, "other").uniform()


def test_record_stores_the_means_in_model_json(tiny_model_dir, gt_dir):
    assert main(["eval", "--model", str(tiny_model_dir), "--gt", str(gt_dir), "--degradation",
                 "bicubic", "--seed", "1", "--record", "-q", "--threads", "1"]) == 0
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    entry = meta["metrics"]["eval"][f"{gt_dir.parent.name}/gt/bicubic/seed1"]
    assert entry["images"] == 2 and set(entry) >= {"model", "bicubic", "crop_border"}


def _record(model_dir: str, gt: str, first: int, start) -> None:
    from model.training.evaluate import EvalReport, record_in_model_dir
    start.wait()                          # all processes read-modify-write at once
    for seed in range(first, first + 20):  # each entry once: a lost write loses it
        means = {"psnr": 20.0 + seed, "ssim": 0.5, "psnr_y": 21.0, "ssim_y": 0.6}
        report = EvalReport("tiny", 4, 4, {"gt": gt, "degradation": "bicubic", "seed": seed},
                            rows=[{"name": "x", "model": means, "bicubic": means}])
        record_in_model_dir(model_dir, report)


def test_concurrent_records_keep_every_entry(tiny_model_dir, tmp_path):
    import multiprocessing
    import shutil
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(6)
    procs = [ctx.Process(target=_record, args=(str(folder), "val/gt", 100 * k, start))
             for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * 6
    meta = json.loads((folder / "model.json").read_text())
    entries = meta["metrics"]["eval"]
    wanted = {f"val/gt/bicubic/seed{100 * k + i}" for k in range(6) for i in range(20)}
    assert wanted <= set(entries), f"{len(wanted - set(entries))} of 120 entries lost"
    assert entries["val/gt/bicubic/seed503"]["model"]["psnr"] == 523.0
    assert not list(folder.glob(".*.tmp"))           # no temporary file left behind


def test_a_failed_record_keeps_model_json_whole_and_leaves_no_temporary(tiny_model_dir,
                                                                        tmp_path, monkeypatch):
    import os
    import shutil
    from model.training import evaluate
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    before = (folder / "model.json").read_text()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    means = {"psnr": 20.0, "ssim": 0.5, "psnr_y": 21.0, "ssim_y": 0.6}
    report = evaluate.EvalReport("tiny", 4, 4, {"gt": "v/gt", "degradation": "bicubic"},
                                 rows=[{"name": "x", "model": means, "bicubic": means}])
    with pytest.raises(OSError, match="No space"):
        evaluate.record_in_model_dir(folder, report)
    assert (folder / "model.json").read_text() == before
    assert not list(folder.glob(".*.tmp"))


def test_eval_cli_says_when_it_cannot_record(tiny_model_dir, gt_dir, monkeypatch, caplog):
    from model.training import evaluate

    def read_only(*_):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(evaluate, "record_in_model_dir", read_only)
    assert main(["eval", "--model", str(tiny_model_dir), "--gt", str(gt_dir), "--degradation",
                 "bicubic", "--record", "-q", "--threads", "1"]) == 2
    assert "cannot record" in caplog.text and "Permission denied" in caplog.text
