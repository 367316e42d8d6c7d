"""Data sources, crops and seeded batches; LR schedule, EMA, LPIPS loading, Algorithm 1."""

import math

import numpy as np
import pytest
import torch

from model.degradations import get_degradation
from model.errors import CheckpointError
from model.training.data import (DataError, ImagePool, PairSampler, PairSettings, list_sources,
                                 pad_to_min_side, random_crop)
from model.training.ema import EMA
from model.training.optim import lr_at


def test_sources_folder_text_list_and_errors(tmp_path, image_dir):
    root, _ = image_dir
    files, _ = list_sources([str(root)])
    assert sorted(p.name for p, _ in files) == ["a.png", "b.jpg", "small.png"]   # recursive
    listing = tmp_path / "list.txt"
    listing.write_text("# training images\nimages/a.png\n\n" + str(root / "sub" / "b.jpg") + "\n")
    files, _ = list_sources([str(listing)])
    assert [p.name for p, _ in files] == ["a.png", "b.jpg"]
    with pytest.raises(DataError, match="neither"):
        list_sources([str(tmp_path / "nope")])


def test_pool_pads_or_skips_small_images_and_counts_unreadable(tmp_path, image_dir):
    root, _ = image_dir
    (root / "broken.png").write_bytes(b"not a png")
    pool = ImagePool([str(root)], 32, "pad")
    assert (pool.stats.padded, pool.stats.unreadable, pool.stats.used) == (1, 1, 3)
    small = [i for i, e in enumerate(pool.entries) if e.path.name == "small.png"][0]
    assert min(pool.image(small).shape[:2]) == 32
    skip = ImagePool([str(root)], 32, "skip")
    assert (skip.stats.skipped_small, skip.stats.used) == (1, 2)
    with pytest.raises(DataError, match="no usable"):
        ImagePool([str(root / "broken.png")], 32)


def test_crops_and_padding():
    img = np.random.default_rng(0).uniform(0, 1, (50, 70, 3)).astype(np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert random_crop(img, 32, rng, (0.5, 1.0)).shape == (32, 32, 3)
    assert pad_to_min_side(img[:10, :20], 32).shape == (32, 32, 3)


def test_batches_are_a_function_of_seed_and_step(image_dir):
    root, _ = image_dir
    pool = ImagePool([str(root)], 32)
    settings = PairSettings(32, get_degradation("bicubic"), (0.5, 1.0), True)
    s = PairSampler(pool, settings, batch_size=3, seed=7)
    gt, lq = s.batch(5)
    assert gt.shape == (3, 3, 32, 32) and lq.shape == (3, 3, 8, 8)
    assert gt.min() >= -1 and gt.max() <= 1
    gt2, lq2 = PairSampler(pool, settings, 3, seed=7).batch(5)
    assert torch.equal(gt, gt2) and torch.equal(lq, lq2)
    assert not torch.equal(gt, s.batch(6)[0]) and not torch.equal(gt, s.batch(5, rank=1)[0])
    with pytest.raises(DataError, match="multiple"):
        PairSampler(pool, PairSettings(30, get_degradation("bicubic")), 1, 0)


def test_lr_warmup_then_cosine():
    lrs = [lr_at(s, 1e-3, 1e-5, 10, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    progress = (60 - 10) / (110 - 10 - 1)          # cosine reaches min_lr at the last step
    assert lrs[60] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * progress)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_ema_tracks_the_weights():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.9)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10 ** 6) == 0.9
    with torch.no_grad():
        net.weight.add_(1.0)
    before = ema.shadow.weight.clone()
    ema.update(net, step=10 ** 6)
    torch.testing.assert_close(ema.shadow.weight, 0.9 * before + 0.1 * net.weight)
    assert not ema.shadow.weight.requires_grad


def test_lpips_loads_user_weights_in_both_layouts(tmp_path):
    from safetensors.torch import save_file
    from model.training.lpips import LPIPS, load_lpips
    torch.manual_seed(0)
    ref = LPIPS()
    vgg = {k: v.clone() for k, v in ref.state_dict().items() if k.startswith("features.")}
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
            for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, tmp_path / "vgg16.pth")
    save_file(lins, str(tmp_path / "lin.safetensors"))
    net = load_lpips(f"{tmp_path / 'vgg16.pth'},{tmp_path / 'lin.safetensors'}")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
    d = net(x, y)
    assert d.shape == (2,) and (d > 0).all()
    with pytest.raises(CheckpointError, match="lacks"):
        load_lpips(str(tmp_path / "lin.safetensors"))


def test_rot90_turns_crops_a_quarter_at_random(tmp_path):
    """``data.rot90``: each crop is also turned by 0-3 quarter turns, drawn per pair, so
    a picture that is not symmetric comes in all four orientations."""
    from PIL import Image
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, :8] = 255                                   # a bright band on the left
    Image.fromarray(img).save(tmp_path / "band.png")
    pool = ImagePool([str(tmp_path)], 32)

    def sides(rot: bool) -> set:
        s = PairSampler(pool, PairSettings(32, get_degradation("bicubic"), (1.0, 1.0), False,
                                           rot90=rot), batch_size=16, seed=3)
        gt, _ = s.batch(0)
        found = set()
        for b in (gt.mean(1) > 0):                      # H x W: where it is bright
            for name, part in (("left", b[:, :8]), ("top", b[:8]), ("right", b[:, -8:]),
                               ("bottom", b[-8:])):
                if bool(part.all()):
                    found.add(name)
        return found
    assert sides(False) == {"left"}
    assert sides(True) == {"left", "top", "right", "bottom"}


def test_dead_leaves_are_deterministic_antialiased_photo_like_images(image_dir):
    from model.training import dead_leaves

    a, b = dead_leaves.render(3), dead_leaves.render(3)
    assert a.shape == (dead_leaves.SIZE, dead_leaves.SIZE, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)                      # a pure function of the index
    assert not np.array_equal(dead_leaves.render(3, size=96), dead_leaves.render(4, size=96))
    assert 0.0 <= a.min() and a.max() <= 1.0
    # many leaves of many sizes: many distinct colours, flat regions and sharp edges
    levels = np.unique((a * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(levels) > 5000
    grad = np.abs(np.diff(a, axis=1)).max(axis=2)
    assert (grad < 2e-3).mean() > 0.4 and (grad > 0.1).mean() > 0.05
    # anti-aliased: edges have intermediate values, not only the two leaves' colours
    assert ((grad > 0.01) & (grad < 0.1)).mean() > 0.05

    root, _ = image_dir
    pool = ImagePool([str(root), "dead-leaves"], min_side=32)
    n_files = len(ImagePool([str(root)], min_side=32))
    assert len(pool) == n_files + dead_leaves.COUNT
    assert pool.stats.found == len(pool) and pool.stats.unreadable == 0
    img = pool.image(n_files)                        # the first dead-leaves image
    assert np.array_equal(img, dead_leaves.render(0))
    assert not np.array_equal(img, pool.image(n_files + 1))
    # sources keep their order; larger crops pad or skip them like any small image
    first = ImagePool(["dead-leaves:2", str(root)], min_side=32)
    assert first.provenance()[0]["generator"] == "dead-leaves" and len(first) == n_files + 2
    big = dead_leaves.SIZE + 8
    padded = ImagePool(["dead-leaves:2"], min_side=big)
    assert padded.stats.padded == 2 and padded.image(1).shape == (big, big, 3)
    with pytest.raises(DataError, match="no usable training images"):
        ImagePool(["dead-leaves:2"], min_side=big, small="skip")
    assert {"generator": "dead-leaves", "index": 0}.items() <= pool.provenance()[n_files].items()
    assert len(ImagePool(["dead-leaves:3"], min_side=32)) == 3
    for bad in ("dead-leaves:", "dead-leaves:0", "dead-leaves:x", "dead-leaves:-2",
                "dead-leaves:\u00b2", f"dead-leaves:{dead_leaves.MAX_COUNT + 1}"):
        with pytest.raises(DataError, match="dead-leaves:N"):
            ImagePool([bad], min_side=32)
