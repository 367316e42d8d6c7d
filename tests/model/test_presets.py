"""Every preset imports from checkpoints in the official layout (incl. SinSR)."""

import json

import pytest
import torch

import model
from model.config import config_from_preset
from model.presets import PRESET_NAMES, preset


def _state(layout: dict) -> dict:
    return {k: torch.zeros(shape) for k, shape in layout.items()}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_imports_from_official_layout(name, reference_dir):
    facts = json.loads((reference_dir / "official_presets.json").read_text())
    source = "realsr_v1" if name == "sinsr" else name      # SinSR keeps realsr_v1's networks
    unet = _state(facts[source]["unet_state_dict_layout"])
    ae = _state(facts[source]["autoencoder_state_dict_layout"])
    r = model.import_official(name, {"state_dict": unet}, ae)
    cfg = r.config
    assert cfg.name == name and cfg.task == preset(name)["task"]
    assert sum(p.numel() for p in r.unet.parameters()) == facts[source]["unet_params"]
    del r


def test_preset_tasks_scales_and_padding():
    expect = {"realsr_v3": ("sr", 4, 4, 64), "realsr_v1": ("sr", 4, 15, 64),
              "bicsr": ("sr", 4, 4, 64), "inpaint_imagenet": ("inpaint", 1, 4, 256),
              "inpaint_face": ("inpaint", 1, 4, 256), "faceir": ("face", 1, 4, 512),
              "sinsr": ("sr", 4, 1, 64)}
    for name, (task, scale, steps, multiple) in expect.items():
        cfg = config_from_preset(name)
        assert (cfg.task, cfg.scale, cfg.steps, cfg.input_multiple) == (task, scale, steps,
                                                                         multiple), name


def test_sinsr_runs_at_the_last_timestep_of_the_15_step_schedule():
    cfg = config_from_preset("sinsr")
    assert cfg.sampler == "single_step" and cfg.diffusion["steps"] == 15
    assert cfg.diffusion["min_noise_level"] == config_from_preset("realsr_v1").diffusion[
        "min_noise_level"]
