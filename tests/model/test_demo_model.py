"""The bundled demo model: what it records, and tiled vs untiled restores."""

import json

import numpy as np
import pytest

import model
from model.directory import BUNDLED
from tests.helpers.images import psnr
from tests.helpers.paths import DATA, REPO

DEMO = BUNDLED["demo"]
pytestmark = pytest.mark.skipif(not (DEMO / "model.json").is_file(),
                                reason="the bundled demo model is not built")


def _input_256():
    path = DATA / "realset80" / "dog.png"                    # 320x320
    if path.is_file():
        from PIL import Image
        img = np.asarray(Image.open(path).convert("RGB"))
        if min(img.shape[:2]) >= 256:
            return np.ascontiguousarray(img[:256, :256])
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([np.sin(xx / 9.0 + c) * np.cos(yy / 13.0 - c) for c in range(3)], -1)
    return np.clip(127 + 80 * base + rng.normal(0, 6, (256, 256, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def demo():
    return model.load("demo")


def test_demo_is_small_and_records_its_recipe():
    size = sum(f.stat().st_size for f in DEMO.iterdir() if f.is_file())
    assert size <= 25 * 2 ** 20
    meta = json.loads((DEMO / "model.json").read_text())
    assert meta["task"] == "sr" and meta["scale"] == 4 and meta["autoencoder"] is None
    assert meta["diffusion"]["steps"] == 4 and meta["diffusion"]["latent_flag"] is False
    prov = meta["provenance"]
    assert prov["space"] == "pixel" and prov["steps"] == prov["config"]["train"]["steps"]
    assert prov["wall_time_s"] > 0 and prov["recipe"].startswith("configs/demo")
    assert (REPO / prov["recipe"]).is_file()
    train = prov["data"]["train"]
    photos = [f for f in train if "generator" not in f]
    # wheel photos, plus images the project renders itself (nothing else)
    assert {f["package"].split("==")[0] for f in photos} <= {
        "scikit-image", "scikit-learn", "matplotlib", "mahotas"}
    assert {f["generator"] for f in train if "generator" in f} <= {"dead-leaves"}
    assert photos and not any("shared" in f["file"] for f in photos)
    assert "eval" in meta["metrics"]


@pytest.mark.slow
def test_tiled_restore_of_256px_matches_untiled_without_seams(demo):
    img = _input_256()
    whole = demo.restore(img, seed=0, tile=0)
    tiled = demo.restore(img, seed=0, tile=256)            # 256-px tiles of a 1024 canvas
    assert whole.shape == tiled.shape == (1024, 1024, 3)
    assert psnr(tiled, whole) >= 35.0
    # no seams: the step across every tile border is that of the untiled image there
    opts = demo.tile_options(256)
    from model.tiling import plan_tiles
    plan = plan_tiles(1024, 1024, opts.latent_tile, opts.latent_overlap)
    edges = sorted({l for _, l in plan.boxes if l} | {l + plan.tile_w for _, l in plan.boxes
                                                    if l + plan.tile_w < 1024})

    def step(im):
        g = np.abs(np.diff(im.astype(np.float64), axis=1)).mean(axis=(0, 2))
        return np.array([g[e - 1] for e in edges])
    assert (step(tiled) <= 1.15 * step(whole) + 0.5).all()


def test_core_restorer_runs_the_demo_as_trained(demo):
    """The demo predicts the residual: its denoiser gives y0 - f(x_t / s_t), as trained."""
    import torch
    assert demo.predict_type == "residual"
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 3, 64, 64, generator=gen)
    y0 = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    t = torch.tensor([3, 1])
    scales = torch.tensor([demo.schedule.input_scale(int(s), latent=False) for s in t])
    with torch.no_grad():
        want = y0 - demo.unet(x_t / scales.view(-1, 1, 1, 1), t, lq=y0)
        got = demo.denoiser()(x_t, t, y0, None)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
