"""Presets: every one resolves to the official hyper-parameters and imports from checkpoints
in the official layout (incl. SinSR)."""

import json

import pytest
import torch

import model
from model.config import config_from_preset
from model.presets import PRESET_NAMES, merged, preset


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


@pytest.mark.parametrize("name", [n for n in PRESET_NAMES if n != "sinsr"])
def test_preset_matches_the_official_hyper_parameters(name, reference_dir):
    facts = json.loads((reference_dir / "official_presets.json").read_text())[name]
    p = preset(name)
    for key in ("official_unet_file", "official_autoencoder_file"):
        assert p[key] == facts[key], key
    for key in ("unet", "autoencoder", "diffusion"):
        # Compared as JSON text: equal values AND the official key order, which
        # model.json keeps.
        assert json.dumps(p[key]) == json.dumps(facts[key]), key


def test_every_preset_resolves_completely():
    for name in PRESET_NAMES:
        p = preset(name)
        assert set(p) == {"description", "task", "official_unet_file",
                          "official_autoencoder_file", "unet", "autoencoder", "diffusion"}
        assert p["description"] and p["unet"]["lq_size"] in (64, 256, 512), name
        assert len(p["autoencoder"]["ddconfig"]) == 11, name
        assert len(p["diffusion"]) == 13 + (name == "sinsr"), name


def test_sinsr_is_realsr_v1_with_its_own_weights_and_sampler():
    sinsr, v1 = preset("sinsr"), preset("realsr_v1")
    assert sinsr["official_unet_file"] == "SinSR_v1.pth"
    assert sinsr["diffusion"].pop("sampler") == "single_step"
    for key in ("task", "official_autoencoder_file", "unet", "autoencoder", "diffusion"):
        assert sinsr[key] == v1[key], key


def test_preset_is_a_copy():
    p = preset("realsr_v3")
    p["unet"]["channel_mult"].append(8)
    p["diffusion"]["steps"] = 99
    assert preset("realsr_v3")["unet"]["channel_mult"] == [1, 2, 2, 4]
    assert preset("realsr_v3")["diffusion"]["steps"] == 4
    assert preset("bicsr")["unet"]["channel_mult"] == [1, 2, 2, 4]


def test_merged_lays_nested_deltas_over_a_base_without_touching_it():
    base = {"a": 1, "n": {"x": 1, "y": [1]}, "z": 0}
    out = merged(base, {"n": {"y": [2], "w": 3}, "a": 5, "b": {"c": 1}})
    assert out == {"a": 5, "n": {"x": 1, "y": [2], "w": 3}, "z": 0, "b": {"c": 1}}
    assert list(out) == ["a", "n", "z", "b"] and list(out["n"]) == ["x", "y", "w"]
    assert base == {"a": 1, "n": {"x": 1, "y": [1]}, "z": 0}
    out["n"]["x"] = 7
    assert base["n"]["x"] == 1
