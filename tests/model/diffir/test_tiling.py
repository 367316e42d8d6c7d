"""Large DiffIR inputs: the tiling policy, CPEN over tiles, blending, one prior per image,
and the step-by-step job the service drives (same pixels as ``restore``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.diffir.stepper import DiffIRJob, run_tiles
from model.diffir.tiling import DiffIRTiling, crop_tiles, tiling_for
from model.errors import InputImageError
from model.restorer import pad_to_multiple
from model.tiling import blend

from tests.helpers.models import tiny_diffir


@pytest.fixture(scope="module")
def r4():
    return tiny_diffir(4, seed=1)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_policy_runs_small_images_whole_and_tiles_large_ones():
    default = tiling_for(None, 8)
    assert default == DiffIRTiling()
    assert default.plan(256, 256, 8).single                  # 256x256 LQ: whole
    big = default.plan(264, 512, 8)
    assert not big.single and (big.tile_h, big.tile_w) == (256, 256)
    assert all(t % 8 == 0 and l % 8 == 0 for t, l in big.boxes)
    assert tiling_for(0, 8) is None
    explicit = tiling_for(32, 8)
    assert explicit.overlap == 8 and explicit.plan(32, 32, 8).single
    assert len(explicit.plan(40, 32, 8).boxes) == 2            # larger than one tile
    with pytest.raises(InputImageError, match="multiple of 16"):
        tiling_for(24, 16)


def test_condition_over_tiles_equals_the_whole_image(r4):
    lq = pad_to_multiple(torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(0)), 8)
    plan = r4.plan(lq.shape[-2], lq.shape[-1], tiling_for(16, 8))
    assert len(plan.boxes) > 4
    whole = r4.condition(lq)
    assert torch.allclose(r4.condition(lq, plan), whole, rtol=1e-5, atol=1e-6)


def test_blending_equal_tiles_gives_that_tile_everywhere():
    plan = tiling_for(16, 8).plan(24, 40, 8)
    value = torch.full((1, 3, 64, 64), 0.25)
    out = blend([value] * len(plan.boxes), plan, 8, 4)
    assert out.shape == (1, 3, 96, 160) and torch.allclose(out, torch.full_like(out, 0.25))


def test_tiled_restore_has_the_exact_size_and_stays_close_to_whole(r4):
    image = _image(37, 53, seed=2)
    tiled = r4.restore(image, seed=4, tile=16)
    whole = r4.restore(image, seed=4, tile=0)
    assert tiled.shape == whole.shape == (148, 212, 3)
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.mean() < 4, diff.mean()        # tiles see only their own pixels


@pytest.mark.parametrize("tile", [None, 16])
def test_job_gives_what_restore_gives(r4, tile):
    image = _image(29, 35, seed=3)
    job = DiffIRJob(r4, image, seed=11, tile=tile)
    assert job.tiles_per_step == (1 if tile is None else len(job.plan.boxes))
    got, want = job.run().astype(int), r4.restore(image, seed=11, tile=tile).astype(int)
    # the same computation, batched differently: on some CPUs (AVX2 kernels) a float32
    # rounding difference moves a pixel across a .5 boundary, never further
    diff = np.abs(got - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())


def test_one_prior_draw_and_one_ipr_for_every_tile(r4):
    job = DiffIRJob(r4, _image(40, 40), seed=7, tile=16)
    job.encode()
    work = job.pending_tiles()
    assert len(work) == len(job.plan.boxes) == 16
    assert all(w.ipr is work[0].ipr for w in work)          # the image's IPR, shared
    noise = torch.randn(1, 256, generator=torch.Generator().manual_seed(7))
    plan = job.plan
    padded = pad_to_multiple(torch.from_numpy(_image(40, 40)).permute(2, 0, 1)[None] / 255.0, 8)
    assert torch.allclose(work[0].ipr, r4.sample_ipr(padded, noise, plan=plan), atol=1e-6)
    assert [tuple(w.lq.shape) for w in work] == [tuple(c.shape)
                                                 for c in crop_tiles(padded, plan)]


def test_batched_work_of_two_jobs_gives_their_lone_pixels(r4):
    a = DiffIRJob(r4, _image(16, 16, seed=1), seed=1)
    b = DiffIRJob(r4, _image(16, 16, seed=2), seed=2)
    alone = [DiffIRJob(r4, _image(16, 16, seed=s), seed=s).run() for s in (1, 2)]
    a.encode()
    b.encode()
    preds = run_tiles(r4, a.pending_tiles() + b.pending_tiles())
    a.complete_step(preds[:1])
    b.complete_step(preds[1:])
    for job, lone in zip((a, b), alone):
        assert np.abs(job.finish().astype(int) - lone.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="different shapes"):
        run_tiles(r4, _two_shapes(r4))
    with pytest.raises(InputImageError, match="no mask"):
        DiffIRJob(r4, _image(8, 8), mask=np.zeros((8, 8), bool))


def _two_shapes(r4):
    jobs = [DiffIRJob(r4, _image(h, 8), seed=0) for h in (8, 16)]
    for job in jobs:
        job.encode()
    return [w for job in jobs for w in job.pending_tiles()]
