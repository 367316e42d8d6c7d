"""Service fixtures: tiny model directories, a shared app client, a Redis key prefix.

Models are real (no mocks): tiny random ones for speed (a 16x16 request costs tens of
milliseconds of network time with one thread); the realsr_small reference model
(``small_model_dir``, tests/conftest.py) where pixels must match the official-parity
restorer.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers.models import tiny_restorer
from tests.helpers.service import running_app, settings_for


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    """task -> directory of a tiny random model (sr x4, inpaint, face)."""
    import model
    root = tmp_path_factory.mktemp("service_models")
    return {task: str(model.save(tiny_restorer(task), root / task))
            for task in ("sr", "inpaint", "face")}


@pytest.fixture(scope="module")
def client(model_dirs) -> Iterator[TestClient]:
    """One app serving sr, inpaint and face (tiny models), shared by a test module."""
    with running_app(settings_for(model_dirs, max_pixels=40_000,
                                  max_body_bytes=300_000)) as c:
        yield c


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
