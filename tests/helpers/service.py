"""Service test helpers: settings, the app in-process, a live uvicorn server, real
`resshift serve` processes, multipart forms, Prometheus samples, JSON errors, polling.

Models are real (no mocks): the service tests serve tiny random ones (helpers.models) for
speed and the realsr_small reference model where pixels must match the official one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

from .images import encode, photo
from .paths import REPO

# one intra-op thread per worker, 16-pixel tiles and a short batching wait: a 16x16
# request on a tiny model costs tens of milliseconds
FAST = dict(torch_threads=1, tile=16, max_wait_ms=5.0, face_size=32)

# 72x72 LQ with 16-tiles overlapping by 8: 64 latent tiles a step, 256 UNet calls at
# batch 1 (a second or more on these CPUs: long next to a few health checks)
LONG = encode(photo(72, 72, seed=5))


def settings_for(models: dict[str, str], **overrides) -> Settings:
    return Settings(models=models, **{**FAST, **overrides})


def wait_ready(client, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        response = client.get("/readyz")
        if response.status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready: {client.get('/readyz').json()}")


@contextlib.contextmanager
def running_app(settings: Settings, ready: bool = True) -> Iterator[TestClient]:
    """The real app with its lifespan (workers start, and stop at exit)."""
    app = create_app(settings)
    with TestClient(app) as client:
        if ready:
            wait_ready(client)
        yield client


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread: real sockets, real disconnects."""

    def __init__(self, settings: Settings):
        import uvicorn
        self.port = free_port()
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("live server did not become ready")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


class Serve:
    """One `resshift serve --role ROLE` process with its own port and log file."""

    def __init__(self, role: str, env: dict[str, str], log_dir: Path, name: str):
        self.role, self.name, self.port = role, name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "resshift", "serve", "--role", role, "--port",
             str(self.port)], cwd=REPO, env={**os.environ, **env}, stdout=self._log,
            stderr=subprocess.STDOUT)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        end = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.log()}"
            try:
                last = httpx.get(self.url + "/readyz", timeout=2)
                if last.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready: {last and last.text}\n{self.log()}")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def form(image: bytes, **fields) -> dict:
    """kwargs for client.post: multipart with the image (and optional mask) files."""
    files = {"image": ("in.png", image, "application/octet-stream")}
    mask = fields.pop("mask", None)
    if mask is not None:
        files["mask"] = ("mask.png", mask, "application/octet-stream")
    return {"files": files, "data": {k: str(v) for k, v in fields.items()}}


def metric(text: str, name: str, **labels) -> float:
    """The value of the first sample called ``name`` whose labels include ``labels``, in a
    Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def assert_error(response, status: int, code: str, *words: str) -> dict:
    """The response is the service's JSON error with this status and code, and its message
    names each of ``words``; returns the body."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    for word in words:
        assert word.lower() in body["error"]["message"].lower(), (word, body)
    assert response.headers.get("x-request-id")
    return body


def poll(predicate, timeout_s: float = 60.0, every_s: float = 0.02):
    """The first truthy value of ``predicate()``, asked every ``every_s`` seconds."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not reached in {timeout_s} s")
