"""Parity with the authors' DiffIRS2 on diffir_realsr_small (float32, CPU)."""

from __future__ import annotations

from tests.helpers.models import rel_err

TOL = 1e-5


def test_condition(diffir_small_restorer, diffir_small):
    t = diffir_small[2]
    assert rel_err(diffir_small_restorer.condition(t["lq"]), t["condition"]) < TOL


def test_every_ipr_step(diffir_small_restorer, diffir_small):
    t = diffir_small[2]
    traj = diffir_small_restorer.sample_ipr(t["lq"], t["x_T"], return_trajectory=True)
    assert len(traj) == t["ipr_trajectory"].shape[0]
    for i, (ours, ref) in enumerate(zip(traj, t["ipr_trajectory"])):
        assert rel_err(ours, ref) < TOL, f"IPR after step {i + 1}"


def test_sr(diffir_small_restorer, diffir_small):
    t = diffir_small[2]
    sr = diffir_small_restorer.sample(t["lq"], t["x_T"])
    assert sr.shape == t["sr"].shape
    assert rel_err(sr, t["sr"]) < TOL


def test_schedule_buffers_match_computed(diffir_small):
    """The stored schedule is the sqrt-linear 0.1..0.99 one our pure functions compute."""
    from model.diffir.schedule import linear_betas, schedule_buffers
    meta, _, t = diffir_small
    s = meta["schedule"]
    computed = schedule_buffers(linear_betas(s["timesteps"], s["linear_start"],
                                             s["linear_end"]))
    for key, stored in t["buffers"].items():
        name = key.removeprefix("diffusion.")
        assert rel_err(computed[name], stored) < 1e-6, name


def test_import_from_yaml_and_prefixed_checkpoint(diffir_small, tmp_path):
    """A YAML options file and a DDP-prefixed {"params": ...} checkpoint load the same."""
    import torch
    import yaml

    import model
    meta, ckpt, t = diffir_small
    yml = tmp_path / "test_DiffIRS2.yml"
    yml.write_text(yaml.safe_dump({"scale": 4, "network_g": {
        "type": "DiffIRS2", **{k: v for k, v in meta["config"].items() if k != "scale"}}}))
    state = {"module." + k: v for k, v in ckpt["params_ema"].items()}
    pth = tmp_path / "net_g.pth"
    torch.save({"params": state}, pth)
    r = model.import_diffir(yml, pth)
    assert r.provenance["checkpoint_file"] == "net_g.pth"
    assert rel_err(r.sample(t["lq"], t["x_T"]), t["sr"]) < TOL
