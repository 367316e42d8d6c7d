"""X0Denoiser: the network's input scaling and output meaning, in one wrapper."""

import pytest
import torch

from model.denoiser import X0Denoiser
from model.errors import ConfigError
from model.schedule import make_schedule, official_sqrt_etas

SCHED = make_schedule(official_sqrt_etas(4, 0.2, 0.99, 2.0, 0.3), 2.0)


class Recorder:
    """A network that returns 2 * its input and remembers what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, lq, mask):
        self.calls.append((x.clone(), t.clone()))
        return 2 * x


@pytest.mark.parametrize("latent", [True, False])
def test_each_item_is_scaled_by_its_own_timestep(latent):
    net = Recorder()
    den = X0Denoiser(net, SCHED, latent=latent)
    x_t = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 0, 3])
    out = den(x_t, t, None, None)
    seen, seen_t = net.calls[0]
    for i, step in enumerate(t.tolist()):
        # bit for bit what dividing that item alone by the schedule's number gives
        assert torch.equal(seen[i:i + 1], x_t[i:i + 1] / SCHED.input_scale(step, latent))
    assert torch.equal(seen_t, t) and torch.equal(out, 2 * seen)


def test_one_timestep_is_one_division_and_normalize_input_off_passes_x_t():
    net = Recorder()
    x_t = torch.randn(2, 1, 3, 3)
    X0Denoiser(net, SCHED, latent=True)(x_t, torch.tensor([2, 2]), None, None)
    assert torch.equal(net.calls[0][0], x_t / SCHED.input_scale(2))
    X0Denoiser(net, SCHED, latent=True, normalize_input=False)(x_t, torch.tensor([2, 1]),
                                                              None, None)
    assert torch.equal(net.calls[1][0], x_t)


def test_residual_output_is_turned_into_x0_with_the_lq_conditioning():
    x_t, lq = torch.randn(1, 3, 4, 4), torch.rand(1, 3, 4, 4)
    den = X0Denoiser(lambda x, t, c, m: torch.full_like(x, 0.5), SCHED, latent=False,
                     predict_type="residual")
    assert torch.equal(den(x_t, torch.tensor([1]), lq, None), lq - 0.5)
    with pytest.raises(ConfigError, match="lq conditioning"):
        den(x_t, torch.tensor([1]), None, None)
    with pytest.raises(ConfigError, match="not supported"):
        X0Denoiser(net := Recorder(), SCHED, latent=False, predict_type="epsilon")
    assert net.calls == []
