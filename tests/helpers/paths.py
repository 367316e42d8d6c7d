"""Where the repository and the shared reference data live (RESSHIFT_SHARED overrides)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RESSHIFT_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference" / "resshift-official"
DIFFIR_REFERENCE = SHARED / "reference" / "diffir-official"
DATA = SHARED / "data"
