"""TiledJob: the step-by-step chain equals Restorer.restore, alone or batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import InputImageError
from model.stepper import TiledJob, run_tiles
from tests.helpers.images import photo
from tests.helpers.models import tiny_restorer


def _grey_diff(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), int((d > 0).sum())


@pytest.fixture(scope="module")
def tiny_sr():
    return tiny_restorer("sr")


def test_tiled_job_equals_restore_with_blended_tiles(tiny_sr):
    # 20x44 LQ -> padded 24x48 -> latent 24x48: 16-tiles overlapping by 8 make a 2x5 grid
    img = photo(20, 44, seed=1)
    job = TiledJob(tiny_sr, img, seed=11, tile=16)
    assert job.tiles_per_step == 10
    ours = job.run()
    ref = tiny_sr.restore(img, seed=11, tile=16)
    worst, count = _grey_diff(ours, ref)
    # measured: bit-identical (0 grey levels, 0 pixels); the contract allows 1 grey level
    assert worst <= 1 and count <= 0.001 * ref.size, (worst, count)
    assert ours.shape == (80, 176, 3)


def test_tiled_job_equals_restore_on_the_reference_model(small_restorer):
    # realsr_small: 16x24 LQ pads to one 64x64 latent tile (the default tile size)
    img = photo(16, 24, seed=2)
    ours = TiledJob(small_restorer, img, seed=3).run()
    ref = small_restorer.restore(img, seed=3)
    worst, count = _grey_diff(ours, ref)
    assert worst <= 1 and count <= 0.001 * ref.size, (worst, count)   # measured: 0, 0


def test_untiled_job_equals_untiled_restore(tiny_sr):
    img = photo(20, 30, seed=4)
    ours = TiledJob(tiny_sr, img, seed=5, tile=0).run()
    np.testing.assert_array_equal(ours, tiny_sr.restore(img, seed=5, tile=0))


def test_a_job_gives_the_same_pixels_alone_or_batched_with_others(tiny_sr):
    """Three jobs of different sizes, started at different times, their tiles stacked into
    shared batches that mix timesteps: each result equals the job run alone."""
    images = [photo(20, 44, seed=1), photo(16, 16, seed=2), photo(30, 20, seed=3)]
    seeds = [11, 12, 13]
    alone = [TiledJob(tiny_sr, im, seed=s, tile=16).run() for im, s in zip(images, seeds)]

    jobs = [TiledJob(tiny_sr, im, seed=s, tile=16) for im, s in zip(images, seeds)]
    started: list[TiledJob] = []
    results: dict[int, np.ndarray] = {}
    rounds = 0
    while len(results) < len(jobs):
        if rounds < len(jobs):                 # one more job joins every round
            jobs[rounds].encode()
            started.append(jobs[rounds])
        active = [j for j in started if not j.done]
        work = [(j, w) for j in active for w in j.pending_tiles()]
        assert len({w.key for _, w in work}) == 1     # all 16x16 latent tiles
        if rounds >= 1:
            assert len({w.t for _, w in work}) > 1 or rounds > 3   # steps really mix
        preds = []
        for k in range(0, len(work), 7):        # batches that cut across jobs
            preds += run_tiles(tiny_sr, [w for _, w in work[k:k + 7]])
        for j in active:
            mine = [p for (owner, _), p in zip(work, preds) if owner is j]
            j.complete_step(mine)
            if j.done:
                results[jobs.index(j)] = j.finish()
        rounds += 1
    for i, ref in enumerate(alone):
        worst, count = _grey_diff(results[i], ref)
        # measured: bit-identical; allowed: 1 grey level on at most 0.1% of the values
        assert worst <= 1 and count <= 0.001 * ref.size, (i, worst, count)


def test_inpainting_job_pastes_known_pixels_and_matches_restore():
    r = tiny_restorer("inpaint")
    img = photo(40, 48, seed=6)
    mask = np.zeros((40, 48), bool)
    mask[10:30, 12:40] = True
    ours = TiledJob(r, img, mask=mask, seed=1, tile=16).run()
    np.testing.assert_array_equal(ours[~mask], img[~mask])
    worst, _ = _grey_diff(ours, r.restore(img, mask=mask, seed=1, tile=16))
    assert worst <= 1
    with pytest.raises(InputImageError, match="needs a mask"):
        TiledJob(r, img)
    with pytest.raises(InputImageError, match="size"):
        TiledJob(r, img, mask=np.zeros((8, 8), bool))


def test_the_seed_is_reported_and_reproduces(tiny_sr):
    img = photo(16, 16)
    first = TiledJob(tiny_sr, img)
    out = first.run()
    np.testing.assert_array_equal(TiledJob(tiny_sr, img, seed=first.seed).run(), out)


def test_misuse_is_refused(tiny_sr):
    job = TiledJob(tiny_sr, photo(16, 16))
    with pytest.raises(RuntimeError, match="encode"):
        job.pending_tiles()
    job.encode()
    with pytest.raises(ValueError, match="predictions"):
        job.complete_step([])
    with pytest.raises(RuntimeError, match="steps"):
        job.finish()
    with pytest.raises(InputImageError):
        TiledJob(tiny_sr, np.zeros((4, 4), np.uint8))


def test_the_lazy_pixel_space_condition_equals_upsampling_the_whole_image():
    import torch.nn.functional as F

    from model.stepper import _LazyCondition
    import model
    demo = model.load("demo")                       # pixel space: the UNet takes LQ x4
    lq = torch.rand(1, 3, 37, 52) * 2 - 1
    cond = _LazyCondition(demo, lq, torch.empty(1, 3, 37 * 4, 52 * 4))
    assert cond.full is None and cond.factor == 4
    full = F.interpolate(lq, size=(37 * 4, 52 * 4), mode="bicubic")
    for top, left, th, tw in ((0, 0, 64, 64), (84, 144, 64, 64), (40, 72, 64, 64),
                              (0, 100, 148, 108), (147, 207, 1, 1)):
        assert torch.equal(cond.crop(top, left, th, tw),
                           full[..., top:top + th, left:left + tw]), (top, left)


def test_a_pixel_space_job_gives_what_restore_gives():
    import model
    demo = model.load("demo")
    image = photo(30, 44, seed=4)
    for tile in (None, 32):
        job = TiledJob(demo, image, seed=5, tile=tile)
        assert job.tiles_per_step > 1
        assert np.array_equal(job.run(), demo.restore(image, seed=5, tile=tile)), tile


def test_banded_conversion_to_uint8_is_the_whole_conversion():
    from model.restorer import to_uint8
    from model.stepper import to_uint8_banded
    x = torch.rand(1, 3, 700, 530) * 2.2 - 1.1
    assert np.array_equal(to_uint8_banded(x, rows=64), to_uint8(x))


def _tiny_sr_with_noise_scale(scale):
    from model.config import config_from_official
    from model.directory import build_networks
    from model.restorer import Restorer
    from tests.helpers.models import tiny_official
    official = tiny_official("sr")
    official["diffusion"]["params"]["noise_scale"] = scale
    cfg = config_from_official(official)
    torch.manual_seed(0)
    unet, ae = build_networks(cfg)
    return Restorer(cfg, unet, ae)


def test_the_noise_scale_scales_every_noise_the_sampler_draws():
    full, half = _tiny_sr_with_noise_scale(1.0), _tiny_sr_with_noise_scale(0.5)
    lq = torch.rand(1, 3, 16, 16) * 2 - 1
    z = full.encode_lq(lq)
    noises = [torch.randn(z.shape, generator=torch.Generator().manual_seed(i))
              for i in range(full.schedule.num_steps + 1)]
    with torch.no_grad():
        ours = half.sample(lq, noises=noises)
        scaled = full.sample(lq, noises=[n * 0.5 for n in noises])
    assert torch.equal(ours, scaled)
    assert not torch.equal(ours, full.sample(lq, noises=noises))


def test_without_noise_the_seed_changes_nothing_and_a_job_still_gives_restores_pixels():
    img = photo(20, 44, seed=1)
    quiet, noisy = _tiny_sr_with_noise_scale(0.0), _tiny_sr_with_noise_scale(1.0)
    # the same network with noise: the seed matters (so the check below can fail)
    assert not np.array_equal(noisy.restore(img, seed=1, tile=0), noisy.restore(img, seed=2, tile=0))
    assert np.array_equal(quiet.restore(img, seed=1, tile=0), quiet.restore(img, seed=2, tile=0))
    for scale in (0.0, 0.5):
        r = _tiny_sr_with_noise_scale(scale)
        job = TiledJob(r, img, seed=11, tile=16)
        assert job.tiles_per_step > 1
        assert np.array_equal(job.run(), r.restore(img, seed=11, tile=16)), scale
