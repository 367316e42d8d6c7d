"""Tests for model.nets.banded: whole-image VAE passes computed in row bands."""

from __future__ import annotations

import pytest
import torch

from model.nets import banded
from model.nets.autoencoder import VQAutoencoder
from tests.helpers.models import rel_err


def _ae(attn_levels=(), seed=0, padding_mode="zeros") -> VQAutoencoder:
    """A small random VQGAN: two levels of 32 / 64 channels (attention at the levels in
    ``attn_levels``, and always in the middle block)."""
    torch.manual_seed(seed)
    res = 64
    attn = [res // 2 ** i for i in attn_levels]
    ae = VQAutoencoder(embed_dim=3, n_embed=16, ddconfig=dict(
        double_z=False, z_channels=3, resolution=res, in_channels=3, out_ch=3, ch=32,
        ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=attn, dropout=0.0,
        padding_mode=padding_mode)).eval()
    # random GroupNorm affine parameters, so the tests see them
    with torch.no_grad():
        for m in ae.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)
    return ae


@pytest.mark.parametrize("h,w", [(32, 48), (33, 26), (8, 70)])
@pytest.mark.parametrize("elems", [1, 3000, banded.BAND_ELEMS])
@torch.no_grad()
def test_banded_encode_and_decode_are_the_modules_result(h, w, elems):
    # elems=1: one row per band (every band boundary and halo case); BAND_ELEMS: one band
    ae = _ae(attn_levels=(1,))
    x = torch.rand(2, 3, h, w) * 2 - 1
    z_ref = ae.encoder(x)
    with ae.banded(band_elems=elems):
        z = ae.encoder(x)
    assert z.shape == z_ref.shape
    assert rel_err(z, z_ref) < 2e-6
    zq = torch.randn(2, 3, h // 2, w // 2)
    y_ref = ae.decoder(zq)
    with ae.banded(band_elems=elems):
        y = ae.decoder(zq)
    assert y.shape == y_ref.shape
    assert rel_err(y, y_ref) < 2e-6


@torch.no_grad()
def test_banded_context_is_left_on_exit_and_on_error():
    ae = _ae()
    with pytest.raises(RuntimeError, match="boom"):
        with ae.banded():
            assert ae.encoder.band_elems == banded.BAND_ELEMS
            raise RuntimeError("boom")
    assert ae.encoder.band_elems is None and ae.decoder.band_elems is None


@torch.no_grad()
def test_statistics_hooks_take_precedence_over_bands():
    # the tiled pass records and imposes statistics through the GroupNorm modules; a
    # banded context around a tile (a torch backend's CPU encoder) must not bypass them
    ae = _ae()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with ae.groupnorm_stats("record") as plain:
        ae.encoder(x)
    with ae.groupnorm_stats("record") as inside, ae.banded():
        ae.encoder(x)
    assert len(plain.names()) > 0 and plain.names() == inside.names()


def test_with_gradients_the_plain_forward_runs():
    ae = _ae()
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with ae.banded():
        z = ae.encoder(x)
    z.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_an_inner_banded_context_keeps_the_outer_settings():
    ae = _ae()
    with ae.banded(band_elems=3000, attn_window=16):
        with ae.banded():
            assert (ae.encoder.band_elems, ae.decoder.band_window) == (3000, 16)
        assert ae.encoder.band_elems == 3000
    assert ae.encoder.band_elems is None


def test_banded_passes_refuse_other_padding_modes():
    ae = _ae(padding_mode="reflect")
    assert not banded.supported(ae)
    with pytest.raises(ValueError, match="padding_mode"):
        with ae.banded():
            pass


@torch.no_grad()
def test_an_attention_window_covering_the_map_is_global_attention():
    ae = _ae()
    z = torch.randn(1, 3, 20, 24)
    ref = ae.decoder(z)
    with ae.banded(attn_window=24):
        assert rel_err(ae.decoder(z), ref) < 2e-6


@torch.no_grad()
def test_a_small_attention_window_is_local_and_closer_the_larger_it_is():
    ae = _ae()
    z = torch.randn(1, 3, 40, 40)
    ref = ae.decoder(z)
    errs = {}
    for window in (16, 32):
        with ae.banded(attn_window=window):
            errs[window] = rel_err(ae.decoder(z), ref)
    attn = ae.decoder.mid.attn_1
    forward = attn.forward
    attn.forward = lambda x: x                 # the decoder without its middle attention
    try:
        without = rel_err(ae.decoder(z), ref)
    finally:
        attn.forward = forward
    # measured: 0.039 (16), 0.014 (32), 0.109 without attention; random weights attend
    # almost uniformly, the worst case for a window
    assert 0 < errs[32] < errs[16] < without / 2, (errs, without)


@torch.no_grad()
def test_banded_under_bf16_autocast_is_as_close_as_the_modules_under_it():
    ae = _ae(attn_levels=(1,))
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    ref = ae.encoder(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module_bf16 = ae.encoder(x).float()
        with ae.banded(band_elems=2000):
            banded_bf16 = ae.encoder(x).float()
    assert rel_err(banded_bf16, ref) < 2.5 * rel_err(module_bf16, ref) + 1e-3


def test_peak_bytes_grow_with_pixels_not_faster():
    ae = _ae(attn_levels=(1,))
    for kind in ("encode", "decode"):
        small = ae.banded_peak_bytes(kind, 256, 256)
        big = ae.banded_peak_bytes(kind, 1024, 1024)
        assert big == 16 * small
        assert ae.banded_peak_bytes(kind, 256, 256, itemsize=2, batch=3) == 3 * small // 2
    with pytest.raises(ValueError, match="kind"):
        ae.banded_peak_bytes("both", 64, 64)


def test_peak_bytes_count_the_largest_full_size_set():
    # ch 32, mult (1, 2): at the decoder's full size, the first block (64 -> 32
    # channels) holds its input (64) and intermediate (32) at 64x64; its output reuses
    # the input's memory
    ae = _ae()
    assert ae.banded_peak_bytes("decode", 64, 64) == (64 + 32) * 64 * 64 * 4
    # the encoder's widening block (32 -> 64 at 32x32) needs a separate output
    assert ae.banded_peak_bytes("encode", 64, 64) == max(
        (32 + 32) * 64 * 64, (32 + 64 + 64) * 32 * 32, 32 * 64 * 64 + 32 * 32 * 32) * 4
