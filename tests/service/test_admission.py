"""Cost-aware admission: a request is priced from its image header with the rates the
worker measured, and refused at once (413) when it cannot finish within its deadline."""

from __future__ import annotations

import numpy as np
import pytest

from service.validation import estimate_seconds

from tests.helpers.images import encode, photo, png_with_size
from tests.helpers.service import assert_error, form, running_app, settings_for


def test_the_work_shape_is_the_plan_the_job_runs(model_dirs):
    import model
    from model.stepper import TiledJob
    restorer = model.load(model_dirs["sr"])
    shape = restorer.work_shape(16)
    for h, w in ((8, 8), (16, 24), (40, 13), (5, 300), (72, 72)):
        job = TiledJob(restorer, np.zeros((h, w, 3), np.uint8), tile=16)
        assert shape.plan(h, w) == job.plan, (h, w)
        assert shape.net_pixels(h, w) == (job.tiles_per_step * job.plan.tile_h
                                          * job.plan.tile_w * job.total_steps)


def test_a_thin_image_costs_what_its_area_needs(model_dirs):
    import model
    shape = model.load(model_dirs["sr"]).work_shape(16)
    thin, square = shape.net_pixels(8, 2000), shape.net_pixels(128, 125)   # equal areas
    assert thin <= 1.25 * square, (thin, square)


@pytest.fixture(scope="module")
def short_deadline(model_dirs):
    settings = settings_for({"sr": model_dirs["sr"]}, request_timeout_s=0.5)
    with running_app(settings) as client:
        yield client


def test_work_over_the_deadline_is_413_from_the_header_alone(short_deadline):
    served = short_deadline.app.state.services.scheduler.served["sr"]
    assert served.net_rate > 0                   # measured at warm-up
    assert estimate_seconds(served, 1000, 1000) > 0.5
    # the header says 1000x1000, the data is a 1x1 image's: refused before decoding
    assert_error(short_deadline.post("/v1/restore", **form(png_with_size(1000, 1000))),
                        413, "too_much_work", "1000x1000", "deadline", "/v1/jobs")
    # the jobs API has an hour: the same header passes admission (and then the truncated
    # data is found: 422, not 413)
    assert_error(short_deadline.post("/v1/jobs", **form(png_with_size(1000, 1000))),
                 422, "invalid_image")


def test_small_work_is_admitted(short_deadline):
    assert short_deadline.post("/v1/restore", **form(encode(photo(8, 8)))).status_code == 200
