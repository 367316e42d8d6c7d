"""Service test fixtures: model directories, app clients, a live uvicorn server, images.

Models are real (no mocks): tiny random ones for speed (a 16x16 request costs tens of
milliseconds of network time with one thread) and the realsr_small reference model
where pixels must match the official-parity restorer.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from typing import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.model.test_stepper import tiny_restorer

FAST = dict(torch_threads=1, tile=16, max_wait_ms=5.0, face_size=32)


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """The test machine is 2 shared cores: tests and workers use one intra-op thread each
    (two threads fighting other processes run small networks many times slower)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    """task -> directory of a tiny random model (sr x4, inpaint, face)."""
    import model
    root = tmp_path_factory.mktemp("service_models")
    return {task: str(model.save(tiny_restorer(task), root / task))
            for task in ("sr", "inpaint", "face")}


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, small_restorer) -> str:
    """The realsr_small reference model as a model directory."""
    import model
    return str(model.save(small_restorer, tmp_path_factory.mktemp("realsr_small") / "m"))


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


@pytest.fixture(scope="module")
def client(model_dirs) -> Iterator[TestClient]:
    """One app serving sr, inpaint and face (tiny models), shared by a test module."""
    with running_app(settings_for(model_dirs, max_pixels=40_000,
                                  max_body_bytes=300_000)) as c:
        yield c


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread: real sockets, real disconnects."""

    def __init__(self, settings: Settings):
        import uvicorn
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        import httpx
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


# -- images --------------------------------------------------------------------------------
def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5.0 + c) * np.cos(yy / 4.0 - c) for c in range(3)], -1)
    return np.clip(127.5 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray | Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def form(image: bytes, **fields) -> dict:
    """kwargs for client.post: multipart with the image (and optional mask) files."""
    files = {"image": ("in.png", image, "application/octet-stream")}
    mask = fields.pop("mask", None)
    if mask is not None:
        files["mask"] = ("mask.png", mask, "application/octet-stream")
    return {"files": files, "data": {k: str(v) for k, v in fields.items()}}


def metric(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the real Redis at 127.0.0.1:6379; every key under it is
    deleted afterwards. Skips when no Redis server answers."""
    import uuid

    import redis
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis server at 127.0.0.1:6379 (these tests need a real one)")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
