"""Reading checkpoints (official ``.pth`` or our safetensors) and checking they fit.

Official files are plain ``torch.save``d state dicts, sometimes wrapped as
``{"state_dict": ...}`` and with ``module.`` prefixes from DDP training. A checkpoint
that does not fit the configured network gets a ``CheckpointError`` naming the first
missing, unexpected and mis-shaped keys, instead of a traceback from inside torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .errors import CheckpointError

StateDict = dict[str, torch.Tensor]
_WRAPPERS = ("state_dict", "params_ema", "params", "model", "ema")
_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(source: str | Path | Mapping) -> StateDict:
    """Load a state dict from a path (.pth/.pt/.ckpt or .safetensors) or a mapping."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
            # torch's own text for a garbage file suggests weights_only=False, which is
            # the wrong advice for a corrupt download: say what the file is instead.
            size = path.stat().st_size
            what = ("it is empty" if size == 0 else
                    f"it is not a readable PyTorch or safetensors checkpoint ({size} bytes: "
                    "corrupt, truncated, or another format)")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            detail = type(exc).__name__ + (f": {first}" if first and len(first) < 120 else "")
            raise CheckpointError(f"cannot read checkpoint {path}: {what} [{detail}]") from exc
    return normalize_state_dict(state)


def normalize_state_dict(state: Mapping) -> StateDict:
    """Unwrap ``{"state_dict": ...}``-style containers and strip DDP/compile prefixes."""
    for _ in range(3):
        wrapped = [k for k in _WRAPPERS if isinstance(state.get(k), Mapping)]
        if not wrapped or any(isinstance(v, torch.Tensor) for v in state.values()):
            break
        state = state[wrapped[0]]
    out: StateDict = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    if not out:
        raise CheckpointError("checkpoint holds no tensors")
    return out


def check_fit(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
              show: int = 5) -> None:
    """Raise CheckpointError unless ``state`` has exactly ``module``'s keys and shapes."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} (network wants {tuple(v.shape)})"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped", misshaped)):
        if items:
            more = f" (+{len(items) - show} more)" if len(items) > show else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:show])}{more}")
    raise CheckpointError(f"the {what} checkpoint does not fit its config: " + "; ".join(parts)
                          + ". Check that the preset/config matches the checkpoint file.")


def load_into(module: nn.Module, source: str | Path | Mapping, what: str) -> nn.Module:
    """Read ``source``, check it fits ``module``, and copy the weights in (strict)."""
    state = read_state_dict(source)
    check_fit(module, state, what)
    module.load_state_dict(state, strict=True, assign=_is_meta(module))
    return module


def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def save_safetensors(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path))
