"""Replacing a file whole: readers and crashes see the old content or the new, never half.

Used wherever the project rewrites a file others may read at the same moment (a model's
model.json, TensorRT engines and timing caches in a shared cache folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def write_atomic(path: Path, data: Union[bytes, bytearray, memoryview, str]) -> None:
    """Write ``data`` (text is UTF-8) to a temporary file beside ``path``, flush it to
    disk, give it the old file's permissions if there was one, and rename it over
    ``path``. On any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
