"""DiffIRRestorer on small random models: sizes, padding, seeds, the uint8 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import InputImageError
from model.restorer import pad_to_multiple

from tests.helpers.models import tiny_diffir


@pytest.fixture(scope="module", params=[4, 2, 1])
def restorer(request):
    return tiny_diffir(request.param)


def test_input_multiple(restorer):
    assert restorer.input_multiple == {4: 8, 2: 16, 1: 32}[restorer.scale]


@pytest.mark.parametrize("h, w", [(13, 17), (30, 9), (8, 8)])
def test_odd_sizes_come_back_at_scale_times_size(restorer, h, w):
    s = restorer.scale
    lq = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    out = restorer.sample(lq, torch.randn(2, 256))
    assert out.shape == (2, 3, s * h, s * w)
    assert torch.isfinite(out).all()


def test_padding_is_reflect_then_crop(restorer):
    """sample() on an odd size equals running on the reflect-padded input, cropped."""
    lq = torch.rand(1, 3, 13, 17, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 256, generator=torch.Generator().manual_seed(2))
    padded = pad_to_multiple(lq, restorer.input_multiple)
    with torch.no_grad():
        ipr = restorer.sample_ipr(padded, noise)
        full = restorer.network.G(padded, ipr)
    s = restorer.scale
    assert torch.equal(restorer.sample(lq, noise), full[..., :13 * s, :17 * s])


def test_batch_items_are_independent():
    r = tiny_diffir(4)
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, 256, generator=torch.Generator().manual_seed(4))
    both = r.sample(lq, noise)
    one = r.sample(lq[1:], noise[1:])
    assert torch.allclose(both[1:], one, rtol=1e-4, atol=1e-5)


def test_restore_is_reproducible_with_a_seed():
    r = tiny_diffir(4)
    image = np.random.default_rng(0).integers(0, 256, (11, 14, 3), dtype=np.uint8)
    a = r.restore(image, seed=7)
    assert a.shape == (44, 56, 3) and a.dtype == np.uint8
    assert np.array_equal(a, r.restore(image, seed=7))
    # the seed means: x_T = torch.randn((1, 256)) from a CPU generator seeded with it
    noise = torch.randn(1, 256, generator=torch.Generator().manual_seed(7))
    lq = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    expected = (r.sample(lq, noise).clamp(0, 1)[0].permute(1, 2, 0) * 255).round()
    assert np.array_equal(a, expected.to(torch.uint8).numpy())


def test_restore_reports_progress():
    r = tiny_diffir(4)
    seen = []
    r.restore(np.zeros((8, 8, 3), np.uint8), seed=0,
              progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen == [("denoise", i, 4) for i in range(1, 5)]


def test_restore_rejects_what_it_cannot_do():
    r = tiny_diffir(4)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputImageError, match="uint8"):
        r.restore(image.astype(np.float32))
    with pytest.raises(InputImageError, match="mask"):
        r.restore(image, mask=np.zeros((8, 8), bool))
    with pytest.raises(InputImageError, match="multiple of 8"):
        r.restore(image, tile=12)
    with pytest.raises(InputImageError, match="prior draw"):
        r.sample(torch.rand(1, 3, 8, 8), torch.randn(1, 64))
