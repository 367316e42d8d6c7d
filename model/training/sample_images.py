"""Photos that PyPI packages ship inside their wheels: the demo model's only data.

``pypi-samples`` (training) and ``pypi-samples-val`` (validation) name fixed lists of
files inside scikit-image (``skimage/data``), scikit-learn (``sklearn/datasets/images``),
matplotlib (``mpl-data/sample_data``) and mahotas (``demos/data``). Nothing is
downloaded: a file is used when its package is installed (``pip install -e ".[train]"``),
and provenance records the package version and a hash of every file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# (distribution, import package, path inside the package)
_TRAIN = [
    ("scikit-image", "skimage", "data/astronaut.png"),
    ("scikit-image", "skimage", "data/hubble_deep_field.jpg"),
    ("scikit-image", "skimage", "data/ihc.png"),
    ("scikit-image", "skimage", "data/motorcycle_left.png"),
    ("scikit-image", "skimage", "data/retina.jpg"),
    ("scikit-image", "skimage", "data/rocket.jpg"),
    ("scikit-image", "skimage", "data/color.png"),
    ("scikit-image", "skimage", "data/camera.png"),
    ("scikit-image", "skimage", "data/brick.png"),
    ("scikit-image", "skimage", "data/grass.png"),
    ("scikit-image", "skimage", "data/gravel.png"),
    ("scikit-image", "skimage", "data/moon.png"),
    ("scikit-image", "skimage", "data/coins.png"),
    ("scikit-image", "skimage", "data/page.png"),
    ("scikit-image", "skimage", "data/text.png"),
    ("scikit-learn", "sklearn", "datasets/images/china.jpg"),
    ("scikit-learn", "sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    # added for the demo's sixth stage: more distinct real photos (MIT / BSD licences)
    ("scikit-image", "skimage", "data/motorcycle_right.png"),
    ("scikit-image", "skimage", "data/cell.png"),
    ("mahotas", "mahotas", "demos/data/DepartmentStore.jpg"),
    ("mahotas", "mahotas", "demos/data/luispedro.jpg"),
    ("mahotas", "mahotas", "demos/data/nuclear.png"),
]
_VAL = [
    ("scikit-image", "skimage", "data/chelsea.png"),
    ("scikit-image", "skimage", "data/coffee.png"),
]
SOURCES = {"pypi-samples": _TRAIN, "pypi-samples-val": _VAL}


@dataclass(frozen=True)
class SampleImage:
    path: Path
    distribution: str
    version: str
    name: str             # package/relative path, e.g. "skimage/data/astronaut.png"

    def provenance(self) -> dict:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        return {"file": self.name, "package": f"{self.distribution}=={self.version}",
                "sha256_16": digest}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def sample_images(source: str) -> tuple[list[SampleImage], list[str]]:
    """(images found, notes about packages/files missing) for a named source."""
    if source not in SOURCES:
        raise ValueError(f"unknown sample source {source!r}; known: {sorted(SOURCES)}")
    found: list[SampleImage] = []
    notes: list[str] = []
    for dist, module, rel in SOURCES[source]:
        root = _package_dir(module)
        if root is None:
            notes.append(f"{dist} is not installed: skipping {module}/{rel}")
            continue
        path = root / rel
        if not path.is_file():
            notes.append(f"{module}/{rel} is not in the installed {dist}")
            continue
        found.append(SampleImage(path, dist, importlib.metadata.version(dist), f"{module}/{rel}"))
    return found, notes
