"""``resshift serve``: clear refusal without models, a real server with them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from resshift.cli import main
from model.directory import BUNDLED

from tests.helpers.images import encode, photo
from tests.helpers.service import free_port


def test_serve_without_a_model_says_what_to_set(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("RESSHIFT_MODELS", f"sr={tmp_path / 'nothing'}")
    with caplog.at_level(logging.ERROR, logger="resshift"):
        assert main(["serve"]) == 2
    assert "RESSHIFT_MODELS" in caplog.text and "no model.json" in caplog.text


@pytest.mark.skipif((BUNDLED["demo"] / "model.json").is_file(),
                    reason="the bundled demo model exists: `resshift serve` would serve it")
def test_default_serve_names_the_missing_demo_model(monkeypatch, caplog):
    monkeypatch.delenv("RESSHIFT_MODELS", raising=False)
    with caplog.at_level(logging.ERROR, logger="resshift"):
        assert main(["serve"]) == 2
    assert "bundled demo model is not built yet" in caplog.text
    assert "RESSHIFT_MODELS=sr=" in caplog.text


def test_bad_settings_are_refused_before_start(monkeypatch, caplog):
    monkeypatch.setenv("RESSHIFT_MODELS", "sr=x")
    monkeypatch.setenv("RESSHIFT_MAX_BATCH", "many")
    with caplog.at_level(logging.ERROR, logger="resshift"):
        assert main(["serve"]) == 2
    assert "max_batch" in caplog.text


def test_serve_runs_a_server_that_restores_and_stops_on_sigterm(model_dirs):
    port = free_port()
    env = {**os.environ, "RESSHIFT_MODELS": f"sr={model_dirs['sr']}",
           "RESSHIFT_TORCH_THREADS": "1", "RESSHIFT_TILE": "16"}
    proc = subprocess.Popen([sys.executable, "-m", "resshift", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.1)
        response = httpx.post(url + "/v1/restore", files={"image": ("a.png",
                                                                    encode(photo(8, 8)))})
        assert response.status_code == 200 and response.headers["x-model"] == "tiny-sr"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    # uvicorn re-raises the signal after its graceful shutdown: -SIGTERM is a clean exit
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "application shutdown complete" in output.lower()
    assert "shutting down" in output.lower()
