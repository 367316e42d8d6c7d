import pytest
import torch

from model.tiling import (TileBlender, TiledDenoiser, axis_starts, blend, paste_back,
                          plan_tiles, ramp_weights, tiled_map)


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (100, 64, 16), (203, 64, 16),
                                                 (1216, 64, 16), (130, 64, 0)])
def test_axis_starts_cover_with_required_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap, "gap or too little overlap"
        assert b > a


def test_axis_starts_respect_alignment_and_reject_bad_overlap():
    assert all(s % 4 == 0 for s in axis_starts(1000, 256, 64, align=4))
    with pytest.raises(ValueError):
        axis_starts(100, 64, 64)


def test_plan_clips_tile_to_small_canvas():
    plan = plan_tiles(40, 60, 64, 16)
    assert (plan.tile_h, plan.tile_w, plan.boxes) == (40, 60, ((0, 0),))


def test_a_thin_canvas_gets_tiles_of_the_same_area_not_the_same_side():
    plan = plan_tiles(40, 200, 64, 16)
    assert {t for t, _ in plan.boxes} == {0}
    assert (plan.tile_h, plan.tile_w) == (40, 96)     # ~64*64 pixels, a multiple of 8
    strip = plan_tiles(16, 20000, 64, 16)              # a 20000x4 LQ strip, x4
    needed = 16 * 20000 / (64 * 64)
    assert strip.tile_h * strip.tile_w == 64 * 64
    assert len(strip.boxes) <= 1.1 * needed, (len(strip.boxes), needed)
    tall = plan_tiles(20000, 16, 64, 16)
    assert (tall.tile_h, tall.tile_w) == (256, 16) and len(tall.boxes) == len(strip.boxes)


def test_ramp_weights_positive_and_flat_inside():
    w = ramp_weights(64, 64, 16)
    assert w.min() > 0 and w[32, 32] == 1.0 and w[0, 0] < w[8, 8]


def test_tiled_map_of_pointwise_function_is_exact():
    x = torch.randn(2, 3, 150, 97)
    out = tiled_map(lambda z: 2 * z + 1, x, tile=64, overlap=16, scale=1.0, max_batch=3)
    torch.testing.assert_close(out, 2 * x + 1)


def test_tiled_map_with_scale_matches_whole_for_local_function():
    x = torch.randn(1, 3, 96, 160)
    up = lambda z: z.repeat_interleave(4, -1).repeat_interleave(4, -2)  # noqa: E731
    out = tiled_map(up, x, tile=32, overlap=8, scale=4.0)
    torch.testing.assert_close(out, up(x))


def test_tiled_denoiser_equals_untiled_for_a_local_denoiser_and_cuts_lq_consistently():
    x = torch.randn(2, 3, 100, 140)
    lq = torch.randn(2, 3, 400, 560)       # 4x the latent: cut at 4x offsets
    def den(z, t, lq_, m):
        pooled = torch.nn.functional.avg_pool2d(lq_, 4)
        return z * 0.5 + pooled + t.view(-1, 1, 1, 1)
    t = torch.tensor([3, 1])
    tiled = TiledDenoiser(den, tile=64, overlap=16, max_batch=5)(x, t, lq, None)
    torch.testing.assert_close(tiled, den(x, t, lq, None), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 4, 0.25])
def test_blending_equal_tiles_gives_that_value_everywhere(scale):
    plan = plan_tiles(96, 160, 64, 16, align=4)
    assert len(plan.boxes) > 2
    side_h, side_w = round(plan.tile_h * scale), round(plan.tile_w * scale)
    out = blend([torch.full((1, 2, side_h, side_w), -0.75)] * len(plan.boxes), plan, 16, scale)
    assert out.shape == (1, 2, round(96 * scale), round(160 * scale))
    torch.testing.assert_close(out, torch.full_like(out, -0.75))


def test_blend_is_the_ramp_weighted_average_of_the_tiles():
    plan = plan_tiles(40, 72, 32, 8)
    gen = torch.Generator().manual_seed(0)
    tiles = [torch.randn(1, 3, plan.tile_h, plan.tile_w, generator=gen) for _ in plan.boxes]
    w = ramp_weights(plan.tile_h, plan.tile_w, 8, dtype=torch.float64)
    num = torch.zeros(1, 3, 40, 72, dtype=torch.float64)
    den = torch.zeros(1, 1, 40, 72, dtype=torch.float64)
    for tile, (top, left) in zip(tiles, plan.boxes):
        num[..., top:top + plan.tile_h, left:left + plan.tile_w] += tile.double() * w
        den[..., top:top + plan.tile_h, left:left + plan.tile_w] += w
    torch.testing.assert_close(blend(tiles, plan, 8), (num / den).float())


def test_rounds_in_one_blender_equal_fresh_blends_bit_for_bit():
    """The stepper's use: blend, normalise in place, reset, blend the next step's tiles."""
    plan = plan_tiles(48, 80, 32, 8)
    gen = torch.Generator().manual_seed(1)
    rounds = [[torch.randn(1, 3, plan.tile_h, plan.tile_w, generator=gen) for _ in plan.boxes]
              for _ in range(3)]
    blender = TileBlender(plan, 8)
    for tiles in rounds:
        for i, tile in enumerate(tiles):
            blender.add(i, tile)
        got = blender.result(inplace=True)
        assert got.data_ptr() == blender.acc.data_ptr()
        assert torch.equal(got, blend(tiles, plan, 8))
        blender.reset()


def test_a_single_tile_plan_passes_the_tile_through():
    plan = plan_tiles(20, 30, 64, 16)
    tile = torch.randn(1, 3, 20, 30)
    assert torch.equal(blend([tile], plan, 16), tile)


def test_batch_items_blend_into_their_own_canvases():
    plan = plan_tiles(40, 72, 32, 8)
    blender = TileBlender(plan, 8, batch=2)
    for i, _ in enumerate(plan.boxes):
        blender.add(i, torch.full((3, plan.tile_h, plan.tile_w), 1.0), 0)
        blender.add(i, torch.full((3, plan.tile_h, plan.tile_w), -2.0), 1)
    out = blender.result()
    torch.testing.assert_close(out[0], torch.ones(3, 40, 72))
    torch.testing.assert_close(out[1], torch.full((3, 40, 72), -2.0))


def test_paste_back_keeps_known_pixels_and_clamps_the_generated_ones():
    gen = torch.Generator().manual_seed(2)
    known = torch.rand(1, 3, 8, 10, generator=gen) * 2 - 1
    generated = torch.randn(1, 3, 8, 10, generator=gen) * 3
    mask = torch.zeros(1, 1, 8, 10)
    mask[..., 2:6, 3:9] = 1
    out = paste_back(generated, known, mask)
    keep = mask.expand_as(known) == 0
    assert torch.equal(out[keep], known[keep])
    assert torch.equal(out[~keep], generated.clamp(-1, 1)[~keep])


def test_fitted_tiles_cover_with_the_same_count_and_less_overlap():
    from model.geometry import axis_starts, fitted_tile
    # 1024 in 512-tiles overlapping by 64 needs three: fitted, they are 384 wide
    assert fitted_tile(1024, 512, 64) == 384
    assert fitted_tile(512, 512, 64) == 512 and fitted_tile(300, 512, 64) == 300
    for length in range(65, 2000, 37):
        for max_tile, overlap, align in ((512, 64, 4), (128, 16, 1), (96, 8, 8)):
            side = fitted_tile(length, max_tile, overlap, align)
            full = axis_starts(length, max_tile, overlap)
            if length % align:
                continue
            starts = axis_starts(length, side, overlap, align)
            assert side <= max_tile and side % align == 0 or side == length
            assert len(starts) <= len(full)                       # never more tiles
            assert starts[0] == 0 and starts[-1] + side == length
            gaps = [b - a for a, b in zip(starts, starts[1:])]
            assert all(side - g >= overlap for g in gaps)         # overlap kept
