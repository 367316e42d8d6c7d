"""The service on another backend (RESSHIFT_BACKEND): same batching, same pixels as the
model layer on that backend, and /v1/models + resshift_model_info say which runs."""

from __future__ import annotations

import numpy as np
import pytest

import model

from tests.helpers.images import decode, encode, photo
from tests.helpers.service import form, metric, running_app, settings_for

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnxruntime_backend_serves_the_model_layer_pixels(model_dirs):
    from export.families import create_backend
    pixels = [photo(16, 24, seed=i) for i in range(3)]
    settings = settings_for({"sr": model_dirs["sr"]}, backend="onnxruntime", tile=16)
    with running_app(settings) as c:
        served = c.get("/v1/models").json()
        entry = next(m for m in served["models"] if m["task"] == "sr")
        assert (entry["backend"], entry["precision"]) == ("onnxruntime", "float32")
        # the configured tile's graph was exported and opened at start-up, not on a request
        prepared = c.app.state.services.scheduler.workers[0]._restorers["sr"].backend
        assert {"unet16x16", "encoder", "decoder"} <= set(prepared._sessions)
        text = c.get("/metrics").text
        assert metric(text, "resshift_model_info", task="sr", model="tiny-sr",
                      backend="onnxruntime", precision="float32") == 1
        responses = [c.post("/v1/restore", **form(encode(p), seed=i))
                     for i, p in enumerate(pixels)]
        # the tiles really ran in onnxruntime sessions, not in the torch modules
        backend = c.app.state.services.scheduler.workers[0]._restorers["sr"].backend
        assert type(backend.inner).__name__ == "OnnxRuntimeBackend"   # under TorchFallback
        assert any(key.startswith("unet") for key in backend._sessions)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    restorer = model.load(model_dirs["sr"])
    on_ort = restorer.using(create_backend("onnxruntime", restorer, model_dir=model_dirs["sr"]))
    for i, (p, r) in enumerate(zip(pixels, responses)):
        expected = on_ort.restore(p, seed=i, tile=16)
        got = decode(r.content)
        assert got.shape == expected.shape == (64, 96, 3)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_unknown_backend_setting_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="onnxruntime"):
        settings_for({"sr": "demo"}, backend="cuda-magic")


def test_nan_decodes_are_redone_in_float32_and_counted(model_dirs):
    """bf16 decoder made to overflow under autocast (fault injection on the real module):
    the request still gets the float32 pixels and the metric counts each redo."""
    import torch
    settings = settings_for({"sr": model_dirs["sr"]}, precision="bf16", tile=16)
    with running_app(settings) as c:
        restorer = c.app.state.services.scheduler.workers[0]._restorers["sr"]

        def overflow(_m, _i, output):
            if torch.is_autocast_enabled("cpu"):
                output = output.clone()
                output[..., 0, 0] = float("nan")
                return output
        hook = restorer.autoencoder.decoder.register_forward_hook(overflow)
        try:
            r = c.post("/v1/restore", **form(encode(photo(16, 24, seed=3)), seed=5))
        finally:
            hook.remove()
        text = c.get("/metrics").text
    assert r.status_code == 200
    assert metric(text, "resshift_decode_fallbacks_total", task="sr") >= 1
    expected = model.load(model_dirs["sr"]).restore(photo(16, 24, seed=3), seed=5, tile=16)
    assert np.abs(decode(r.content).astype(int) - expected.astype(int)).max() <= 1
