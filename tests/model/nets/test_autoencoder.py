"""Tests for model.nets.autoencoder: official-format parity, layouts, GroupNorm stats, attention."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from model.nets.autoencoder import (
    AttnBlock,
    GroupNormStats,
    StatGroupNorm,
    VQAutoencoder,
    VectorQuantizer,
    clean_state_dict,
    groupnorm_stats,
)
from tests.helpers.models import rel_err
from tests.helpers.paths import REFERENCE as REF

needs_ref = pytest.mark.skipif(
    not (REF / "realsr_small_tensors.pt").exists(),
    reason=f"official reference vectors not found under {REF} (set RESSHIFT_SHARED)",
)
needs_presets = pytest.mark.skipif(
    not (REF / "official_presets.json").exists(),
    reason=f"official_presets.json not found under {REF} (set RESSHIFT_SHARED)",
)

PRESETS = ["realsr_v3", "realsr_v1", "bicsr", "inpaint_imagenet", "inpaint_face", "faceir"]


@pytest.fixture(scope="module")
def small():
    """(autoencoder with the realsr_small weights, reference tensors)."""
    cfg = json.loads((REF / "realsr_small.json").read_text())["config"]["autoencoder"]
    ae = VQAutoencoder(**cfg).eval()
    ae.load_state_dict(torch.load(REF / "realsr_small_autoencoder.pth", weights_only=True), strict=True)
    tensors = torch.load(REF / "realsr_small_tensors.pt", weights_only=True)
    return ae, tensors


# ---------------------------------------------------------------------------
# 1. parity with the official implementation
# ---------------------------------------------------------------------------


@needs_ref
@torch.no_grad()
def test_encode_matches_official(small):
    ae, t = small
    x = F.interpolate(t["lq"], scale_factor=4, mode="bicubic", align_corners=False)
    z = ae.encode(x)
    assert z.shape == t["z_y"].shape
    assert rel_err(z, t["z_y"]) < 1e-5


@needs_ref
@torch.no_grad()
def test_decode_matches_official(small):
    ae, t = small
    x0 = t["x_trajectory"][-1]
    # One batch for both variants (quantised / not) keeps the test fast.
    quant = ae.decode(x0, quantize=True)
    assert quant.shape == t["decoded_image"].shape == (1, 3, 256, 256)
    assert rel_err(quant, t["decoded_image"]) < 1e-5
    plain = ae.decode(x0, quantize=False)
    assert rel_err(plain, t["decoded_without_quantize"]) < 1e-5


# ---------------------------------------------------------------------------
# 2. state-dict layouts of all released checkpoints
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def presets():
    return json.loads((REF / "official_presets.json").read_text())


def _layout_items(layout):
    """Layouts are stored as {key: shape} or as [[key, shape], ...]."""
    return list(layout.items()) if isinstance(layout, dict) else [(k, s) for k, s in layout]


@needs_presets
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_layout(presets, preset):
    entry = presets[preset]
    with torch.device("meta"):
        ae = VQAutoencoder(**entry["autoencoder"])
    sd = ae.state_dict()
    layout = _layout_items(entry["autoencoder_state_dict_layout"])
    assert list(sd) == [k for k, _ in layout]
    for key, shape in layout:
        assert tuple(sd[key].shape) == tuple(shape), key
    if "autoencoder_params" in entry:
        assert sum(p.numel() for p in ae.parameters()) == entry["autoencoder_params"]
    assert ae.downsample_factor == 2 ** (len(entry["autoencoder"]["ddconfig"]["ch_mult"]) - 1)


@needs_ref
def test_small_layout_and_extras_ignored():
    data = json.loads((REF / "realsr_small.json").read_text())
    params = dict(data["config"]["autoencoder"])
    params.update(lossconfig={"target": "x"}, ckpt_path=None, remap=None, sane_index_shape=True)
    with torch.device("meta"):
        ae = VQAutoencoder(**params)
    sd = ae.state_dict()
    layout = _layout_items(data["autoencoder_layout"])
    assert list(sd) == [k for k, _ in layout]
    assert all(tuple(sd[k].shape) == tuple(s) for k, s in layout)


# ---------------------------------------------------------------------------
# 3. GroupNorm statistics record / use
# ---------------------------------------------------------------------------


def _norms(module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, StatGroupNorm)]


@needs_ref
@torch.no_grad()
def test_groupnorm_record_then_use_reproduces_plain(small):
    ae, t = small
    z = t["x_trajectory"][-1][..., :8, :8].contiguous()
    x = t["lq"][..., :32, :32].contiguous()  # 32 x 32 image -> 8 x 8 latent

    plain_z = ae.encode(x)
    plain_img = ae.decode(z)

    with ae.groupnorm_stats("record") as enc_stats:
        rec_z = ae.encode(x)
    with ae.groupnorm_stats("record") as dec_stats:
        rec_img = ae.decode(z)
    # Recording does not change the computation at all.
    assert torch.equal(rec_z, plain_z)
    assert torch.equal(rec_img, plain_img)
    names = [n for n, _ in _norms(ae)]
    assert set(enc_stats.names()) == {n for n in names if n.startswith("encoder.")}
    assert set(dec_stats.names()) == {n for n in names if n.startswith("decoder.")}
    # Recorded moments are the input's per-(batch, group) mean / biased variance.
    assert dec_stats.names()[0] == "decoder.mid.block_1.norm1"

    with ae.groupnorm_stats("use", enc_stats):
        use_z = ae.encode(x)
    with ae.groupnorm_stats("use", dec_stats):
        use_img = ae.decode(z)
    assert rel_err(use_z, plain_z) < 1e-5
    assert rel_err(use_img, plain_img) < 1e-5

    # Context exit restores the plain path everywhere.
    assert all(m._stats_ctl is None for _, m in _norms(ae))
    # Missing layers are reported, not silently skipped.
    with pytest.raises(KeyError):
        with ae.groupnorm_stats("use", dec_stats):
            ae.encode(x)


def _quadrants(h, w, halo):
    """Quadrant tiles with a halo: (core box, crop box, core fractions of the crop)."""
    for y0, y1 in ((0, h // 2), (h // 2, h)):
        for x0, x1 in ((0, w // 2), (w // 2, w)):
            a0, a1 = max(0, y0 - halo), min(h, y1 + halo)
            b0, b1 = max(0, x0 - halo), min(w, x1 + halo)
            th, tw = a1 - a0, b1 - b0
            core = ((y0 - a0) / th, (y1 - a0) / th, (x0 - b0) / tw, (x1 - b0) / tw)
            yield (y0, y1, x0, x1), (a0, a1, b0, b1), core


@torch.no_grad()
def test_groupnorm_quadrant_aggregation_single_layer():
    torch.manual_seed(0)
    gn = StatGroupNorm(64)
    gn.weight.normal_()
    gn.bias.normal_()
    x = torch.randn(2, 64, 32, 32) * 3 + torch.randn(1, 64, 1, 1) * 5
    whole_out = F.group_norm(x, 32, gn.weight, gn.bias, 1e-6)
    with groupnorm_stats(gn, "record") as whole:
        assert torch.equal(gn(x), whole_out)

    acc = GroupNormStats()
    tiles = [x[..., :16, :16], x[..., :16, 16:], x[..., 16:, :16], x[..., 16:, 16:]]
    for tile in tiles:
        with groupnorm_stats(gn, "record", acc):
            gn(tile)
    mean_w, var_w = whole.mean_var("")
    mean_a, var_a = acc.mean_var("")
    assert torch.equal(acc.count[""], whole.count[""])
    assert torch.allclose(mean_a, mean_w, rtol=0, atol=1e-6)
    assert torch.allclose(var_a, var_w, rtol=1e-6, atol=0)
    # ... and equal the true per-(batch, group) statistics.
    xg = x.double().reshape(2, 32, -1)
    assert torch.allclose(mean_w, xg.mean(-1), atol=1e-6)
    assert torch.allclose(var_w, xg.var(-1, unbiased=False), rtol=1e-6)

    # Every tile normalised with the aggregated stats: the stitched result is the
    # whole-image GroupNorm, i.e. all tiles agree on one normalisation.
    with groupnorm_stats(gn, "use", acc):
        outs = [gn(tile) for tile in tiles]
    top = torch.cat(outs[:2], dim=-1)
    bottom = torch.cat(outs[2:], dim=-1)
    stitched = torch.cat([top, bottom], dim=-2)
    assert rel_err(stitched, whole_out) < 1e-6

    # Batch-reduced stats broadcast over a batch of tiles.
    acc1 = GroupNormStats()
    with groupnorm_stats(gn, "record", acc1, reduce_batch=True):
        gn(x)
    assert acc1.count[""].shape == (1, 32)
    with groupnorm_stats(gn, "use", acc1):
        assert gn(x).shape == x.shape


@needs_ref
@torch.no_grad()
def test_groupnorm_quadrant_aggregation_network(small, monkeypatch):
    """Decode 4 haloed quadrant tiles: aggregated stats cover the image exactly once,
    the first GroupNorm's aggregated stats equal the whole-image ones, a refine pass
    with whole-image stats is exact up to the middle attention, and in the use pass
    every tile is normalised with the same (aggregated) statistics."""
    ae, t = small
    z = t["x_trajectory"][-1][..., :12, :12].contiguous()
    h, w = z.shape[-2:]
    # A halo of 3 latent pixels covers the receptive field of conv_in + one
    # residual block (three 3x3 convs), i.e. everything before the middle attention.
    tiles = list(_quadrants(h, w, halo=3))

    with ae.groupnorm_stats("record") as whole:
        ae.decode(z)
    acc = GroupNormStats()
    for _, (a0, a1, b0, b1), core in tiles:
        with ae.groupnorm_stats("record", acc, core=core):
            ae.decode(z[..., a0:a1, b0:b1])
    assert acc.names() == whole.names()
    for name in whole.names():
        assert torch.equal(acc.count[name], whole.count[name]), name  # cores partition every map

    def close(name, a, b, tol=1e-5):
        ma, va = a.mean_var(name)
        mb, vb = b.mean_var(name)
        assert torch.allclose(ma, mb, rtol=0, atol=tol * (1 + mb.abs().max().item())), name
        assert torch.allclose(va, vb, rtol=tol, atol=0), name

    close("decoder.mid.block_1.norm1", acc, whole)

    refined = GroupNormStats()
    for _, (a0, a1, b0, b1), core in tiles:
        with ae.groupnorm_stats("refine", whole, into=refined, core=core):
            ae.decode(z[..., a0:a1, b0:b1])
    for name in ("decoder.mid.block_1.norm1", "decoder.mid.block_1.norm2", "decoder.mid.attn_1.norm"):
        close(name, refined, whole)

    seen = []
    original = StatGroupNorm.normalize_with

    def spy(self, x, mean, var):
        seen.append((self._stats_name, mean.clone(), var.clone()))
        return original(self, x, mean, var)

    monkeypatch.setattr(StatGroupNorm, "normalize_with", spy)
    per_tile = []
    for _, (a0, a1, b0, b1), _core in tiles:
        seen.clear()
        with ae.groupnorm_stats("use", acc):
            ae.decode(z[..., a0:a1, b0:b1])
        per_tile.append(list(seen))
    first = per_tile[0]
    assert [n for n, _, _ in first] == acc.names()
    for other in per_tile[1:]:
        assert [n for n, _, _ in other] == [n for n, _, _ in first]
        for (_, m0, v0), (_, m1, v1) in zip(first, other):
            assert torch.equal(m0, m1) and torch.equal(v0, v1)
    for name, mean, var in first:
        ma, va = acc.mean_var(name)
        assert torch.equal(mean, ma) and torch.equal(var, va)


def test_groupnorm_stats_roundtrip():
    s = GroupNormStats.from_mean_var({"a": (torch.zeros(1, 4) + 2, torch.ones(1, 4) * 3)}, count=10)
    s2 = GroupNormStats.from_state_dict(s.state_dict()).merge(s)
    mean, var = s2.mean_var("a")
    assert torch.allclose(mean, torch.full((1, 4), 2.0, dtype=torch.float64))
    assert torch.allclose(var, torch.full((1, 4), 3.0, dtype=torch.float64))
    assert s2.count["a"].sum().item() == 80
    with pytest.raises(ValueError):
        s2.add("a", torch.ones(2, 4), torch.ones(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError):
        with groupnorm_stats(torch.nn.Identity(), "use"):
            pass


def test_clean_state_dict_unwraps_and_strips_prefix():
    w = torch.zeros(2)
    assert clean_state_dict({"state_dict": {"module.quant_conv.bias": w}}) == {"quant_conv.bias": w}
    assert clean_state_dict({"quant_conv.bias": w}) == {"quant_conv.bias": w}


# ---------------------------------------------------------------------------
# 4. attention and codebook search
# ---------------------------------------------------------------------------


@torch.no_grad()
def test_sdpa_attention_matches_naive():
    torch.manual_seed(1)
    blk = AttnBlock(64)
    for p in blk.parameters():
        p.normal_(0, 0.2)
    x = torch.randn(2, 64, 6, 7)

    h = F.group_norm(x, 32, blk.norm.weight, blk.norm.bias, 1e-6)
    b, c, hh, ww = x.shape
    q = blk.q(h).reshape(b, c, -1).transpose(1, 2)  # B x N x C
    k = blk.k(h).reshape(b, c, -1)  # B x C x N
    v = blk.v(h).reshape(b, c, -1).transpose(1, 2)  # B x N x C
    weights = torch.softmax(q @ k / math.sqrt(c), dim=-1)
    naive = x + blk.proj_out((weights @ v).transpose(1, 2).reshape(b, c, hh, ww))

    assert rel_err(blk(x), naive) < 1e-5
    blk.query_chunk = 5  # 42 tokens in 9 chunks
    assert rel_err(blk(x), naive) < 1e-5
    blk.query_chunk = None

    # The inputs must qualify for a kernel that never stores the n x n matrix (a
    # strided q/k/v silently falls back to the math kernel); with the math kernel
    # disabled this raises if they do not.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        assert rel_err(blk(x), naive) < 1e-5


@torch.no_grad()
def test_quantizer_chunked_nearest_code():
    torch.manual_seed(2)
    vq = VectorQuantizer(n_embed=50, embed_dim=3, chunk_elems=50 * 7)  # 7 rows per chunk
    z = torch.randn(2, 3, 5, 9)
    idx = vq.indices(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = torch.cdist(flat.double(), vq.embedding.weight.double()).argmin(1).reshape(2, 5, 9)
    assert torch.equal(idx, brute)
    zq = vq(z)
    assert zq.shape == z.shape
    assert torch.equal(zq, vq.embedding.weight[brute].permute(0, 3, 1, 2))
    vq.chunk_elems = 1 << 26
    assert torch.equal(vq.indices(z), idx)


@torch.no_grad()
def test_traceable_small_model():
    cfg = dict(double_z=False, z_channels=3, resolution=64, in_channels=3, out_ch=3, ch=32,
               ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0, padding_mode="zeros")
    torch.manual_seed(3)
    ae = VQAutoencoder(embed_dim=3, n_embed=16, ddconfig=cfg).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    traced = torch.jit.trace(ae, (x,), check_trace=False)
    assert rel_err(traced(x), ae(x)) < 1e-6
