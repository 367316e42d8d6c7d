"""Both families' restorers implement model.family.ModelFamily, and what the layers
above rely on behaves the same through it (no one asks a model which family it is)."""

from __future__ import annotations

import numpy as np
import pytest

import model
from model.family import Job, ModelFamily
from tests.helpers.images import photo
from tests.helpers.models import tiny_diffir, tiny_restorer as tiny_resshift

MEMBERS = ("networks", "work_shape", "serving_tile", "latent_tile", "make_job",
           "run_batch", "restore", "using")


@pytest.fixture(scope="module", params=["resshift", "diffir"])
def restorer(request):
    return tiny_resshift("sr") if request.param == "resshift" else tiny_diffir(4)


def test_the_restorer_implements_the_interface(restorer):
    assert isinstance(restorer, ModelFamily)
    for name in MEMBERS:
        assert callable(getattr(restorer, name)), name
    nets = restorer.networks()
    assert nets and all(hasattr(m, "parameters") for m in nets.values())


def test_a_job_through_the_interface_gives_restore_s_pixels(restorer):
    image = photo(32, 40)
    tile = restorer.serving_tile(16)
    job = restorer.make_job(image, seed=3, tile=tile)
    assert isinstance(job, Job)
    job.encode()
    while not job.done:
        job.complete_step(restorer.run_batch(job.pending_tiles()))
    out = job.finish()
    assert out.shape == (32 * restorer.scale, 40 * restorer.scale, 3)
    same = restorer.restore(image, seed=3, tile=tile)
    assert np.abs(out.astype(int) - same.astype(int)).max() <= 1


def test_serving_tile_is_what_the_family_means_by_the_service_setting():
    resshift, diffir = tiny_resshift("sr"), tiny_diffir(4)
    assert resshift.serving_tile(16) == 16 and resshift.latent_tile(16) == 16
    assert diffir.serving_tile(16) is None and diffir.latent_tile(16) is None


def test_save_and_load_dispatch_by_type_and_by_model_json(tmp_path):
    for r in (tiny_resshift("sr"), tiny_diffir(4)):
        path = model.save(r, tmp_path / r.family)
        back = model.load(path)
        assert type(back) is type(r) and back.family == r.family
    with pytest.raises(model.ConfigError, match="no model directory format for a object"):
        model.save(object(), tmp_path / "x")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model.json").write_text('{"family": "odd"}')
    with pytest.raises(model.ConfigError, match="known families are 'resshift', 'diffir'"):
        model.load(tmp_path / "odd")
