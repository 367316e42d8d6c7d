"""``make gpu-check`` in ``--dry-run`` mode: the one-shot GPU script runs end to end on
the CPU (reduced-width model), so it cannot rot between the sessions that have a GPU."""

import json
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_stage_it_can(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", str(out), "--dry-run"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "gpu_check.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(stages) == ["environment", "pytest_gpu", "engines", "fidelity", "throughput",
                            "service"]
    assert all(s["status"] in ("passed", "skipped") for s in stages.values())
    assert stages["environment"]["data"]["dry_run"] is True
    # the gpu tests were collected and skipped (no CUDA here), none failed
    gpu = stages["pytest_gpu"]["data"]
    assert gpu["tests"] > 0 and gpu["failures"] == gpu["errors"] == 0
    # TensorRT-RTX builds ahead of time on a CPU: where it is installed, engines are built
    try:
        import tensorrt_rtx  # noqa: F401
        assert stages["engines"]["status"] == "passed"
        assert len(stages["engines"]["data"]["engines"]) == 3      # UNet, encoder, decoder
    except ImportError:
        assert stages["engines"]["status"] == "skipped"
    fid = stages["fidelity"]["data"]
    assert "markdown" in fid
    rows = stages["throughput"]["data"]["rows"]
    assert {r["batch"] for r in rows} == {1, 2} and all(r["images_per_s"] > 0 for r in rows)
    svc = stages["service"]["data"]
    assert svc["clients"] == 4 and svc["p50_s"] > 0 and svc["mean_batch"] >= 1
    md = (out / "gpu_check.md").read_text()
    assert "| service | passed |" in md
