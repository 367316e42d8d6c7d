"""DiffIR S2 (Xia et al., ICCV 2023), the real-world SR models of ``DiffIR-RealSR``.

A 4-step diffusion over a compact prior vector (the IPR), conditioned on the LQ image
by CPEN_S2, then the DIRformer restorer modulated by that IPR. Pieces:

- ``config``: the official ``network_g`` arguments, validated (``DiffIRConfig``);
- ``schedule`` / ``sampler``: the IPR diffusion as pure functions;
- ``dirformer`` / ``prior`` / ``network``: the networks, official key names;
- ``checkpoint``: official state dicts (duplicate keys, schedule buffers);
- ``restorer``: ``DiffIRRestorer.sample`` / ``restore``; ``importer.import_diffir``;
- ``tiling``: whole-image limit, tiles and blending for large inputs (one IPR per image);
- ``stepper``: ``DiffIRJob``, one request cut open for the service's batching;
- ``directory``: model directories (model.json ``"family": "diffir"`` + safetensors).
"""

from __future__ import annotations

from .config import DiffIRConfig, load_diffir_config
from .importer import import_diffir
from .restorer import DiffIRRestorer

__all__ = ["DiffIRConfig", "DiffIRRestorer", "import_diffir", "load_diffir_config"]
