"""The HTTP API end to end on real models: restore, jobs, models, health, auth, headers."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from model.stepper import TiledJob
from tests.helpers.images import decode, encode, photo
from tests.helpers.models import tiny_restorer
from tests.helpers.service import form, running_app, settings_for


def test_importing_the_service_does_not_import_torch():
    code = ("import sys, service.app, service.routers.restore, service.scheduler; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_multipart_restore_returns_the_image_with_seed_model_and_timings(client):
    response = client.post("/v1/restore", headers={"X-Request-Id": "abc-123"},
                           **form(encode(photo(20, 30)), task="sr", seed=7))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-request-id"] == "abc-123"
    assert response.headers["x-seed"] == "7"
    assert response.headers["x-model"] == "tiny-sr" and response.headers["x-task"] == "sr"
    assert float(response.headers["x-inference-seconds"]) > 0
    assert "denoise;dur=" in response.headers["server-timing"]
    assert decode(response.content).shape == (80, 120, 3)


def test_json_restore_with_base64_gives_the_same_pixels_as_the_form(client):
    image = encode(photo(16, 24, seed=3))
    by_form = client.post("/v1/restore", **form(image, task="sr", seed=5))
    body = {"image": base64.b64encode(image).decode(), "task": "sr", "seed": 5,
            "output_format": "webp"}
    by_json = client.post("/v1/restore", json=body)
    assert by_json.status_code == 200 and by_json.headers["content-type"] == "image/webp"
    # webp is lossy: compare through a lossless request too
    body["output_format"] = "png"
    data_url = client.post("/v1/restore", json={**body, "image": "data:image/png;base64," +
                                                body["image"]})
    assert np.array_equal(decode(data_url.content), decode(by_form.content))


def test_a_random_seed_is_reported_and_reproduces_the_result(client):
    image = encode(photo(16, 16, seed=4))
    first = client.post("/v1/restore", **form(image, task="sr"))
    seed = int(first.headers["x-seed"])
    again = client.post("/v1/restore", **form(image, task="sr", seed=seed))
    assert np.array_equal(decode(first.content), decode(again.content))
    assert client.post("/v1/restore", **form(image, task="sr")).headers["x-request-id"]


def test_served_result_equals_the_model_layer_restore(client, model_dirs):
    """Service pixels == model.stepper.TiledJob == Restorer.restore (tile 16 here)."""
    import model
    pixels = photo(20, 44, seed=9)
    response = client.post("/v1/restore", **form(encode(pixels), task="sr", seed=21))
    restorer = model.load(model_dirs["sr"])
    expected = restorer.restore(pixels, seed=21, tile=16)
    diff = np.abs(decode(response.content).astype(int) - expected.astype(int))
    assert diff.max() <= 1, diff.max()          # measured: 0 (bit-identical)
    assert np.array_equal(TiledJob(restorer, pixels, seed=21, tile=16).run(), expected)


def test_reference_model_served_with_default_tiles_matches_restore(small_model_dir,
                                                                   small_restorer):
    """The realsr_small reference model behind the service, default settings for tiles."""
    pixels = photo(16, 24, seed=1)
    with running_app(settings_for({"sr": str(small_model_dir)}, tile=None)) as c:
        response = c.post("/v1/restore", **form(encode(pixels), seed=3))   # task defaults
        models = c.get("/v1/models").json()["models"]
    assert response.status_code == 200, response.text
    expected = small_restorer.restore(pixels, seed=3)
    diff = np.abs(decode(response.content).astype(int) - expected.astype(int))
    assert diff.max() <= 1, diff.max()          # measured: 0
    assert models[0]["latent_tile"] == 64 and models[0]["scale"] == 4


def test_models_lists_tasks_with_scale_steps_limits_backend_precision(client):
    models = {m["task"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"sr", "inpaint", "face"}
    sr = models["sr"]
    assert (sr["scale"], sr["steps"], sr["backend"], sr["precision"]) == (4, 4, "torch", "float32")
    assert sr["limits"]["max_pixels"] == 40_000 and not sr["needs_mask"]
    assert models["inpaint"]["needs_mask"] and models["face"]["limits"]["input_size"] == 32


def test_inpainting_fills_only_the_mask(client):
    pixels = photo(32, 40, seed=2)
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 10:30] = 255
    response = client.post("/v1/restore", **form(encode(pixels), task="inpaint", seed=1,
                                                  mask=encode(mask)))
    assert response.status_code == 200, response.text
    out = decode(response.content)
    keep = mask == 0
    assert np.array_equal(out[keep], pixels[keep])


def test_jobs_submit_poll_fetch_and_delete(client):
    response = client.post("/v1/jobs", **form(encode(photo(16, 16)), task="sr", seed=2))
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and response.headers["location"] == f"/v1/jobs/{job['id']}"
    for _ in range(500):
        state = client.get(f"/v1/jobs/{job['id']}").json()
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.02)
    assert state["status"] == "succeeded", state
    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["x-seed"] == "2"
    sync = client.post("/v1/restore", **form(encode(photo(16, 16)), task="sr", seed=2))
    assert np.array_equal(decode(result.content), decode(sync.content))
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200     # forgets it
    assert client.get(f"/v1/jobs/{job['id']}").json()["error"]["code"] == "job_not_found"


def test_job_errors_unknown_id_and_not_finished(client):
    missing = client.get("/v1/jobs/nope/result")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert client.delete("/v1/jobs/nope").status_code == 404
    # a 48x48 SR job takes dozens of tile batches: still running when we ask
    job = client.post("/v1/jobs", **form(encode(photo(48, 48)), task="sr")).json()
    early = client.get(f"/v1/jobs/{job['id']}/result")
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_finished"
    client.delete(f"/v1/jobs/{job['id']}")
    for _ in range(500):
        state = client.get(f"/v1/jobs/{job['id']}").json()
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.02)
    assert state["status"] == "canceled" and state["error"]["code"] == "canceled"
    gone = client.get(f"/v1/jobs/{job['id']}/result")
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "job_not_succeeded"


def test_api_keys_guard_the_api_but_not_health(model_dirs):
    keys = "first-key,second-key"
    with running_app(settings_for({"sr": model_dirs["sr"]}, api_keys=keys,
                                  metrics_auth=True)) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        denied = c.get("/v1/models")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert denied.json()["error"]["code"] == "unauthorized"
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Basic second-key"}
                     ).status_code == 401
        ok = {"Authorization": "Bearer second-key"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.post("/v1/restore", **form(encode(photo(8, 8)))).status_code == 401
        assert c.post("/v1/restore", headers=ok, **form(encode(photo(8, 8)))).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=ok).status_code == 200


def test_a_job_belongs_to_the_key_that_created_it(model_dirs):
    with running_app(settings_for({"sr": model_dirs["sr"]}, api_keys="k1,k2")) as c:
        one, two = ({"Authorization": f"Bearer {k}"} for k in ("k1", "k2"))
        job = c.post("/v1/jobs", headers=one, **form(encode(photo(8, 8)))).json()
        unknown = c.get("/v1/jobs/0123456789abcdef", headers=two)
        for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
            other = c.request(method, f"/v1/jobs/{job['id']}{path}", headers=two)
            assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
            # the same answer as an id that never existed, apart from the id itself
            assert other.json()["error"]["message"].replace(job["id"], "X") == \
                unknown.json()["error"]["message"].replace("0123456789abcdef", "X")
        end = time.monotonic() + 30
        while c.get(f"/v1/jobs/{job['id']}", headers=one).json()["status"] != "succeeded":
            assert time.monotonic() < end
            time.sleep(0.02)
        assert c.get(f"/v1/jobs/{job['id']}/result", headers=one).status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}/result", headers=two).status_code == 404
        assert c.delete(f"/v1/jobs/{job['id']}", headers=two).status_code == 404
        assert c.delete(f"/v1/jobs/{job['id']}", headers=one).status_code == 200


def test_health_and_unknown_routes(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    missing = client.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/restore")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    page = client.get("/")
    assert page.status_code == 200 and "/v1/restore" in page.text
    assert 'rel="icon" href="/favicon.ico"' in page.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert Image.open(io.BytesIO(icon.content)).format == "ICO"


def test_a_model_that_fails_to_load_keeps_the_server_unready(tmp_path):
    with running_app(settings_for({"sr": str(tmp_path / "absent")}), ready=False) as c:
        for _ in range(500):
            body = c.get("/readyz").json()
            if "failed" in body["error"]["message"]:
                break
            time.sleep(0.02)
        assert c.get("/readyz").status_code == 503
        assert "not a model directory" in body["error"]["message"]
        assert c.get("/healthz").status_code == 200
        refused = c.post("/v1/restore", **form(encode(photo(8, 8))))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        assert refused.headers["retry-after"]


@pytest.mark.parametrize("spec, parsed", [
    ("sr=models/a,inpaint=/abs/b", {"sr": "models/a", "inpaint": "/abs/b"}),
    (" sr = demo ", {"sr": "demo"}),
])
def test_settings_parse_shell_style_lists(monkeypatch, spec, parsed):
    from service.settings import Settings
    monkeypatch.setenv("RESSHIFT_MODELS", spec)
    monkeypatch.setenv("RESSHIFT_API_KEYS", "k1, k2")
    monkeypatch.setenv("RESSHIFT_DEVICES", "cuda:0,cuda:1")
    monkeypatch.setenv("RESSHIFT_MAX_BATCH", "16")
    s = Settings()
    assert s.models == parsed and s.devices == ["cuda:0", "cuda:1"] and s.max_batch == 16
    assert s.key_values() == [b"k1", b"k2"] and "k1" not in repr(s)


def test_settings_reject_nonsense(monkeypatch):
    from pydantic import ValidationError

    from service.settings import Settings
    monkeypatch.setenv("RESSHIFT_MODELS", "just-a-path")
    with pytest.raises(ValidationError, match="task=path"):
        Settings()
    monkeypatch.setenv("RESSHIFT_MODELS", "sr=x")
    monkeypatch.setenv("RESSHIFT_MAX_BATCH", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_defaults_serve_the_bundled_demo_model(monkeypatch):
    from service.settings import Settings
    for var in ("RESSHIFT_MODELS", "RESSHIFT_DEVICES", "RESSHIFT_API_KEYS"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.models == {"sr": "demo"} and s.devices == ["cpu"] and not s.api_keys


def test_tiny_restorer_is_deterministic():
    # the fixtures' model directories depend on it
    a, b = tiny_restorer("sr"), tiny_restorer("sr")
    assert all(np.array_equal(x, y) for x, y in zip(a.unet.state_dict().values(),
                                                    b.unet.state_dict().values()))
