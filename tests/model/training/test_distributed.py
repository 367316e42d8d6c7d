"""DDP is detected from torchrun's environment; two CPU ranks (gloo) train together."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from model.training.distributed import env_info
from tests.helpers.models import tiny_recipe
from tests.helpers.paths import REPO


def test_env_detection():
    assert not env_info({}).enabled and env_info({}).is_main
    info = env_info({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert info.enabled and not info.is_main and info.world_size == 4


@pytest.mark.slow
def test_torchrun_two_cpu_ranks(tmp_path, image_dir):
    recipe = tiny_recipe(tmp_path, image_dir, steps=2, grad_accum=2, val_every=0)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", "-m", "resshift", "train", str(cfg), "-q"]
    done = subprocess.run(cmd, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    prov = json.loads((tmp_path / "model" / "model.json").read_text())["provenance"]
    assert prov["hardware"]["ranks"] == 2 and prov["samples_seen"] == 2 * 2 * 2 * 2
