"""A folder of small images for the training tests (the recipe is helpers.models.tiny_recipe)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.helpers.images import photo


@pytest.fixture
def image_dir(tmp_path):
    """(train folder with a sub-folder and one image smaller than the crop, val folder)."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(photo(48, 40, 1)).save(root / "a.png")
    Image.fromarray(photo(40, 56, 2)).save(root / "sub" / "b.jpg")
    Image.fromarray(photo(20, 24, 3)).save(root / "small.png")      # smaller than the crop
    val = tmp_path / "val"
    val.mkdir()
    Image.fromarray(photo(40, 40, 4)).save(val / "v.png")
    return root, val
