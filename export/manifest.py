"""``onnx/manifest.json``: what was exported, from which weights, and how well it matched.

Example (abridged)::

    {"format_version": 1, "opset": 17, "tiles": [64], "tolerance": 1e-4, "precisions": "fp16",
     "model": {"name": "realsr_v3", "task": "sr", "space": "latent",
               "weights_sha256": "3f2a..."},
     "versions": {"torch": "2.13.0+cpu", "onnx": "1.23.2", "onnxruntime": "1.32.0"},
     "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
     "graphs": [{"name": "unet_t64", "kind": "unet", "precision": "fp32",
                 "file": "unet_t64.onnx", "sha256": "...", "tile": 64, "lq_tile": 64,
                 "inputs": [{"name": "x", "shape": ["batch", 3, 64, 64], "dtype": "float32"}, ...],
                 "outputs": [...], "rel_err": 9.1e-07,
                 "measures": {"psnr_db": 140.1}, "limits": {"psnr_db": 60.0},
                 "checks": [{"shapes": {"x": [1, 3, 64, 64], ...}, "rel_err": 9.1e-07,
                             "psnr_db": 140.6}, ...],
                 "export_s": 1.6},
                {"name": "unet_t64", "kind": "unet", "precision": "fp16",
                 "file": "unet_t64.fp16.onnx", ..., "measures": {"psnr_db": 84.2},
                 "limits": {"psnr_db": 35.0},
                 "fp16": {"fp16_nodes": 1255, "kept_fp32": {"Softmax": 18, ...}, ...}}, ...]}

A graph is identified by ``name`` and ``precision`` (records written before float16
graphs existed have no ``precision``: float32). ``measures`` holds the worst value of
each bounded measure over the checks, ``limits`` the bounds it was held to
(``export.fidelity.CHECK_LIMITS``); DiffIR graphs have ``rel_err`` against ``tolerance``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def weights_hash(modules: Iterable[Optional[nn.Module]]) -> str:
    """sha256 over every tensor of the modules' state dicts (name, dtype, shape, bytes).

    Independent of file layout: the same weights loaded from .pth or .safetensors hash
    the same, and any changed value changes it.
    """
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{index}:{name}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_DTYPES = {1: "float32", 7: "int64", 10: "float16", 11: "float64", 6: "int32", 16: "bfloat16"}


def graph_io(path: Path) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of an ONNX file: name, shape (ints or axis names), dtype."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict]:
        out = []
        for v in values:
            tt = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim]
            out.append({"name": v.name, "shape": shape,
                        "dtype": _DTYPES.get(tt.elem_type, str(tt.elem_type))})
        return out
    return describe(proto.graph.input), describe(proto.graph.output)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def write_manifest(directory: Path, manifest: dict) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(directory: Path) -> dict:
    return json.loads((Path(directory) / MANIFEST).read_text())
