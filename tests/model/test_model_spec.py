"""ModelSpec: the typed reading of a model config, with the networks' own defaults."""

import copy
import inspect

import pytest

from model.config import ModelSpec, config_from_official, config_from_preset
from model.errors import ConfigError
from model.nets.unet import SwinUNet
from tests.helpers.models import tiny_official, tiny_restorer


@pytest.mark.parametrize("preset,latent,scale,ratio,mask", [
    ("realsr_v3", True, 4, 1, False), ("inpaint_imagenet", True, 1, 4, True),
    ("faceir", True, 1, 8, False)])
def test_presets_read_as_the_official_models_are(preset, latent, scale, ratio, mask):
    cfg = config_from_preset(preset)
    spec = ModelSpec.from_config(cfg)
    assert (spec.latent, spec.scale, spec.lq_ratio, spec.cond_mask) == (latent, scale, ratio,
                                                                         mask)
    assert spec.cond_lq and spec.normalize_input and not spec.clip_denoised
    assert spec.predict_type == "xstart" and spec.input_multiple == cfg.input_multiple
    # the config's own properties are the spec's
    assert (cfg.latent, cfg.steps, cfg.sampler, cfg.needs_mask) == (
        spec.latent, spec.steps, spec.sampler, spec.cond_mask)


def test_defaults_are_the_networks_own():
    official = tiny_official("sr")
    params = official["model"]["params"]
    for key in ("lq_size", "cond_lq", "cond_mask"):
        params.pop(key, None)
    for key in ("normalize_input", "predict_type", "sampler"):
        official["diffusion"]["params"].pop(key, None)
    spec = ModelSpec.from_config(config_from_official(official))
    defaults = inspect.signature(SwinUNet).parameters
    assert spec.lq_size == defaults["lq_size"].default
    assert spec.cond_lq == defaults["cond_lq"].default
    assert spec.cond_mask == defaults["cond_mask"].default
    assert spec.lq_ratio == spec.lq_size // spec.image_size
    assert (spec.normalize_input, spec.predict_type, spec.sampler) == (True, "xstart", "full")


def test_single_step_models_make_one_call_and_pixel_models_clip():
    official = tiny_official("sr")
    official["diffusion"]["params"]["sampler"] = "single_step"
    official["autoencoder"] = None
    spec = ModelSpec.from_config(config_from_official(official))
    assert spec.steps == 1 and spec.timesteps == 4
    assert not spec.latent and spec.clip_denoised and spec.factor == 1


@pytest.mark.parametrize("section,key,says", [
    ("model", "image_size", "model.params.image_size"),
    ("diffusion", "steps", "diffusion.params.steps")])
def test_missing_required_keys_are_named(section, key, says):
    official = copy.deepcopy(tiny_official("sr"))
    del official[section]["params"][key]
    with pytest.raises(ConfigError, match=says):
        ModelSpec.from_config(config_from_official(official))


def test_an_unknown_sampler_is_refused():
    official = tiny_official("sr")
    official["diffusion"]["params"]["sampler"] = "ddim"
    with pytest.raises(ConfigError, match="sampler 'ddim'"):
        ModelSpec.from_config(config_from_official(official))


def test_a_restorer_reads_its_config_once():
    r = tiny_restorer("sr")
    assert r.spec == ModelSpec.from_config(r.config)
    assert r.using(None).spec is r.spec
    assert (r.latent, r.scale, r.factor, r.latent_unit, r.predict_type, r.steps) == (
        r.spec.latent, r.spec.scale, r.spec.factor, r.spec.latent_unit, r.spec.predict_type,
        r.spec.steps)


@pytest.mark.parametrize("value", [-0.1, 1.5, "loud", "0.5", True, None, float("nan"),
                                   10 ** 400])
def test_a_noise_scale_outside_0_to_1_is_refused(value):
    official = tiny_official("sr")
    official["diffusion"]["params"]["noise_scale"] = value
    with pytest.raises(ConfigError, match="noise_scale must be a number from 0 to 1"):
        ModelSpec.from_config(config_from_official(official))


@pytest.mark.parametrize("value,expected", [(0, 0.0), (0.25, 0.25), (1, 1.0)])
def test_a_noise_scale_from_0_to_1_is_read(value, expected):
    official = tiny_official("sr")
    official["diffusion"]["params"]["noise_scale"] = value
    assert ModelSpec.from_config(config_from_official(official)).noise_scale == expected
