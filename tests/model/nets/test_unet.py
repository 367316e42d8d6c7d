"""Tests for model.nets.unet: checkpoint layout and numerical parity with the official ResShift UNet."""

import json
from pathlib import Path

import pytest
import torch

from model.nets.unet import SwinUNet, shifted_window_mask, unet_from_config
from tests.helpers.models import rel_err
from tests.helpers.paths import REFERENCE as REF

PRESETS = ["realsr_v3", "realsr_v1", "bicsr", "inpaint_imagenet", "inpaint_face", "faceir"]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data missing: {path} (set RESSHIFT_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="module")
def small_model():
    cfg = json.loads(_need(REF / "realsr_small.json").read_text())["config"]["model"]
    state = torch.load(_need(REF / "realsr_small_unet.pth"), map_location="cpu", weights_only=True)
    model = unet_from_config(cfg).eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="module")
def small_tensors():
    return torch.load(_need(REF / "realsr_small_tensors.pt"), map_location="cpu", weights_only=True)


def test_parity_realsr_small(small_model, small_tensors):
    t = small_tensors
    with torch.no_grad():
        out = small_model(t["unet_first_input"], t["unet_first_t"], lq=t["lq"])
    ref = t["unet_first_output"]
    assert out.shape == ref.shape
    err = rel_err(out, ref)
    assert err < 1e-5, f"relative error {err:.3e}"


@pytest.mark.parametrize("preset", PRESETS)
def test_state_dict_layout_matches_official(preset):
    presets = json.loads(_need(REF / "official_presets.json").read_text())
    entry = presets[preset]
    with torch.device("meta"):
        model = SwinUNet(**entry["unet"])
    ours = model.state_dict()
    expected = entry["unet_state_dict_layout"]
    assert list(ours) == list(expected)
    bad = {k: (list(v.shape), expected[k]) for k, v in ours.items() if list(v.shape) != list(expected[k])}
    assert not bad, f"shape mismatches: {bad}"
    if "unet_params" in entry:
        assert sum(p.numel() for p in model.parameters()) == entry["unet_params"]


@pytest.mark.parametrize("size", [(64, 128), (128, 64)])
def test_non_square_latent(small_model, size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *size, generator=gen)
    lq = torch.rand(1, 3, *size, generator=gen) * 2 - 1
    with torch.no_grad():
        out = small_model(x, torch.tensor([2]), lq=lq)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_batch_matches_single_items(small_model, small_tensors):
    t = small_tensors
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([t["unet_first_input"], torch.randn(1, 3, 64, 64, generator=gen)])
    lq = torch.cat([t["lq"], torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1])
    steps = torch.tensor([3, 1])
    with torch.no_grad():
        both = small_model(x, steps, lq=lq)
        for i in range(2):
            single = small_model(x[i : i + 1], steps[i : i + 1], lq=lq[i : i + 1])
            assert rel_err(both[i : i + 1], single) < 1e-5


def test_shift_mask_only_bottom_window_row():
    # the reference's region labelling only separates tokens in the bottom row of windows
    mask = shifted_window_mask(32, 16, 8, 4)
    assert mask.shape == (8, 64, 64)
    per_window = (mask != 0).flatten(1).any(1).reshape(4, 2)
    assert per_window[-1].all() and not per_window[:-1].any()


def _tiny_unet(**kw) -> SwinUNet:
    torch.manual_seed(0)
    return SwinUNet(image_size=32, in_channels=3, model_channels=32, out_channels=3,
                    attention_resolutions=[8], channel_mult=[1, 2], num_res_blocks=[1, 1],
                    swin_depth=1, swin_embed_dim=64, num_head_channels=32, window_size=8,
                    cond_lq=True, lq_size=32, **kw).eval()


def test_norm_groups_changes_every_groupnorm_but_not_the_weights():
    official, narrow = _tiny_unet(), _tiny_unet(norm_groups=8)
    norms = [m for m in narrow.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    assert all(m.num_groups == 32 for m in official.modules() if isinstance(m, torch.nn.GroupNorm))
    a, b = official.state_dict(), narrow.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    # same weights, other grouping: a different function (the grouping is really used)
    narrow.load_state_dict(a)
    x, lq, t = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32), torch.tensor([1])
    with torch.no_grad():
        for m in (official, narrow):      # non-zero output layer, or both outputs are 0
            torch.nn.init.normal_(m.out[-1].weight, std=0.1)
        narrow.out[-1].load_state_dict(official.out[-1].state_dict())
        assert not torch.allclose(official(x, t, lq=lq), narrow(x, t, lq=lq), atol=1e-4)


def test_norm_groups_must_divide_the_widths():
    with pytest.raises(ValueError, match="norm_groups 12"):
        _tiny_unet(norm_groups=12)
