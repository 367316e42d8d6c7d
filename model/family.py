"""The interface every model family's restorer implements, and nothing more.

The export layer and the service use models only through it (and through each
family's own modules, which they reach by the restorer's type, never by comparing
``family`` strings). ResShift's ``model.restorer.Restorer`` and DiffIR's
``model.diffir.restorer.DiffIRRestorer`` implement it; ``tests/model/test_family.py``
checks both against it.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Job(Protocol):
    """One image's restore cut into steps (``make_job``): ``encode`` once, then while
    not ``done`` run ``pending_tiles`` through the model's ``run_batch`` (possibly
    together with other jobs' work of the same key) and hand the outputs back, either
    all at once (``complete_step(outputs)``) or one by one as batches finish
    (``accept(index, output)``, then ``complete_step()``); ``finish`` returns the HxWx3
    uint8 image."""

    seed: int

    @property
    def done(self) -> bool: ...

    @property
    def tiles_per_step(self) -> int:
        """Work items per round (admission and ranking use it)."""

    @property
    def steps_done(self) -> int: ...

    def encode(self) -> None: ...

    def pending_tiles(self) -> Sequence[Any]: ...

    def accept(self, index: int, output: torch.Tensor) -> bool:
        """Store the output of pending item ``index``; True once the round is complete."""

    def complete_step(self, outputs: Optional[Sequence[torch.Tensor]] = None) -> None: ...

    def finish(self) -> np.ndarray: ...


@runtime_checkable
class ModelFamily(Protocol):
    """A loaded model of any family.

    Data (model.json, ``/v1/models``, metrics, batch keys; never branched on):
    ``family``, ``name``, ``task``, ``scale``, ``steps``, ``needs_mask``,
    ``input_multiple``, ``device``.
    """

    family: str
    device: torch.device
    scale: int

    @property
    def name(self) -> str: ...

    @property
    def task(self) -> str: ...

    @property
    def steps(self) -> int: ...

    @property
    def needs_mask(self) -> bool: ...

    @property
    def input_multiple(self) -> int: ...

    def restore(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                seed: Optional[int] = None, tile: Optional[int] = None) -> np.ndarray:
        """HxWx3 uint8 in, the restored HxWx3 uint8 out (one call, end to end)."""

    def using(self, backend) -> "ModelFamily":
        """The same model with its networks run by an export backend (None: torch)."""

    def networks(self) -> dict[str, torch.nn.Module]:
        """Its torch modules by name, the denoising network first."""

    def work_shape(self, tile: Optional[int] = None):
        """How ``restore(..., tile=tile)`` cuts an image into batched work
        (``model.geometry.WorkShape``: admission, ranking and batching read it)."""

    def serving_tile(self, tile: Optional[int]) -> Optional[int]:
        """What the service's tile setting means for this family, as ``restore``'s
        ``tile`` (None: the family's own policy)."""

    def latent_tile(self, tile: Optional[int]) -> Optional[int]:
        """The fixed latent tile side ``tile`` gives (export shapes), or None."""

    def make_job(self, image: np.ndarray, mask: Optional[np.ndarray] = None,
                 seed: Optional[int] = None, tile: Optional[int] = None) -> Job:
        """``restore`` as a step-by-step :class:`Job`; same seed, same pixels."""

    def run_batch(self, work: Sequence[Any]) -> list[torch.Tensor]:
        """One network call over same-key work items of any of this model's jobs."""
