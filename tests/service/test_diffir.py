"""A DiffIR model served next to a ResShift one: both answer, /v1/models shows the
families, DiffIR requests batch with each other (never with ResShift tiles) and a
request's pixels do not depend on the batch it ran in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import model

from tests.helpers.images import decode, encode, photo
from tests.helpers.service import form, metric, running_app, settings_for

# diffir_realsr_small's architecture (shared/reference/diffir-official), random weights
SMALL = {"type": "DiffIRS2", "n_encoder_res": 2, "dim": 16, "scale": 4,
         "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8],
         "ffn_expansion_factor": 2.2, "LayerNorm_type": "BiasFree"}


@pytest.fixture(scope="module")
def diffir_dir(tmp_path_factory) -> str:
    import torch

    from model.diffir import DiffIRRestorer, load_diffir_config
    from model.diffir.network import build_network
    from model.diffir.schedule import make_schedule
    cfg = load_diffir_config(SMALL)
    torch.manual_seed(0)
    restorer = DiffIRRestorer(cfg, build_network(cfg),
                              make_schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end))
    restorer.name = "diffir-small"
    return str(model.save(restorer, tmp_path_factory.mktemp("diffir") / "small"))


@pytest.fixture(scope="module")
def both(model_dirs, diffir_dir) -> dict[str, str]:
    return {"sr": model_dirs["sr"], "sr-diffir": diffir_dir}


def test_both_families_answer_side_by_side(both, diffir_dir):
    pixels = photo(13, 17, seed=1)
    with running_app(settings_for(both)) as c:
        listed = {m["task"]: m for m in c.get("/v1/models").json()["models"]}
        resshift = c.post("/v1/restore", **form(encode(pixels), task="sr", seed=3))
        diffir = c.post("/v1/restore", **form(encode(pixels), task="sr-diffir", seed=3))
        masked = c.post("/v1/restore", **form(encode(pixels), task="sr-diffir",
                                               mask=encode(np.zeros((13, 17), np.uint8))))
        text = c.get("/metrics").text
    assert {t: m["family"] for t, m in listed.items()} == {"sr": "resshift",
                                                           "sr-diffir": "diffir"}
    d = listed["sr-diffir"]
    assert (d["model"], d["kind"], d["scale"], d["steps"], d["input_multiple"],
            d["latent_tile"], d["needs_mask"]) == ("diffir-small", "sr", 4, 4, 8, None, False)
    for response in (resshift, diffir):
        assert response.status_code == 200
        assert decode(response.content).shape == (52, 68, 3)
    assert diffir.headers["X-Model"] == "diffir-small" and diffir.headers["X-Seed"] == "3"
    lone = model.load(diffir_dir).restore(pixels, seed=3)
    assert np.array_equal(decode(diffir.content), lone)
    assert masked.status_code == 422 and masked.json()["error"]["code"] == "mask_not_supported"
    assert metric(text, "resshift_requests_total", task="sr-diffir", status="200") == 1
    assert metric(text, "resshift_inference_duration_seconds_count", task="sr-diffir",
                  stage="denoise") == 1
    assert metric(text, "resshift_tiles_per_request_sum", task="sr-diffir") == 1


def test_diffir_requests_batch_together_and_results_do_not_change(both, diffir_dir):
    # five 16x16 DiffIR requests (one padded shape) and one 16x24, among ResShift ones
    shapes = [(16, 16)] * 5 + [(16, 24)]
    pixels = [photo(h, w, seed=10 + i) for i, (h, w) in enumerate(shapes)]
    restorer = model.load(diffir_dir)
    alone = [restorer.restore(p, seed=i) for i, p in enumerate(pixels)]
    calls = [dict(image=encode(p), task="sr-diffir", seed=i) for i, p in enumerate(pixels)]
    calls += [dict(image=encode(photo(16, 16, seed=i)), task="sr", seed=i) for i in range(3)]
    with running_app(settings_for(both, max_batch=8, max_wait_ms=1000)) as c:
        before = c.get("/metrics").text
        with ThreadPoolExecutor(len(calls)) as pool:
            busy = list(pool.map(lambda k: c.post("/v1/restore", **form(**k)), calls))
        after = c.get("/metrics").text
    assert all(r.status_code == 200 for r in busy), [r.text for r in busy]
    for lone, response in zip(alone, busy):
        diff = np.abs(lone.astype(int) - decode(response.content).astype(int))
        assert diff.max() <= 1, diff.max()          # measured: 0 (bit-identical)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)
    batches = delta("resshift_batch_size_count", task="sr-diffir")
    assert delta("resshift_batch_size_sum", task="sr-diffir") == 6     # one forward each
    assert 2 <= batches < 6, batches          # the 16x16 ones shared; 16x24 ran alone
    assert delta("resshift_batch_size_sum", task="sr") == 3 * 4        # 1 tile x 4 steps
