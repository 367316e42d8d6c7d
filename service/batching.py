"""The worker's scheduling policy as pure functions: what to do next, which tiles go together.

The worker has four kinds of work: decode a finished request, encode a new one (its
latent tiles then join the queue), run the UNet on a batch of queued tiles, or wait.
``next_action`` picks one from plain numbers; ``form_batch`` picks the tiles. Neither
touches a tensor, a thread or a clock, so the policy is unit-tested on its own.

Policy, in order:

1. Decode finished requests first: their work is done, the client is waiting.
2. A full batch (``max_batch`` tiles of one shape) runs at once.
3. Encode a new request while fewer than ``max_batch`` tiles are queued: its tiles can
   fill the batch. (With more queued, encoding waits, so a stream of arrivals cannot
   starve requests already in flight.)
4. Otherwise the group of the oldest tile runs when that tile has waited ``max_wait``
   or when ``max_batch`` tiles are queued in all; until then the worker waits.

Tiles only batch with tiles of the same key (model family, task and tile shapes: a
DiffIR image never shares a batch with ResShift tiles); within a key they run oldest
first, whatever request or timestep they belong to. With ``max_batch = 1``
the policy degenerates to one request at a time, first come first served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Sequence, Union


@dataclass(frozen=True)
class QueuedTile:
    """What the policy sees of a queued tile: its batching key and when it was queued."""

    key: Hashable
    enqueued: float       # seconds, any monotonic clock


@dataclass(frozen=True)
class Decode:
    """Decode the oldest finished request."""


@dataclass(frozen=True)
class Encode:
    """Encode the oldest new request."""


@dataclass(frozen=True)
class RunBatch:
    """Run the UNet on these queue positions (all of one key, oldest first)."""

    indices: tuple[int, ...]


@dataclass(frozen=True)
class Wait:
    """Nothing is due: sleep until woken, or at most ``timeout`` seconds (None: forever)."""

    timeout: Optional[float]


Action = Union[Decode, Encode, RunBatch, Wait]


def form_batch(tiles: Sequence[QueuedTile], max_batch: int, full_only: bool = False
               ) -> tuple[int, ...]:
    """Positions of the next batch: up to ``max_batch`` oldest tiles of one key.

    The key is that of the oldest tile overall, unless ``full_only``: then the first key
    (by its oldest tile) that has ``max_batch`` tiles, or () if none has.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    order = sorted(range(len(tiles)), key=lambda i: (tiles[i].enqueued, i))
    groups: dict[Hashable, list[int]] = {}
    for i in order:                      # dicts keep insertion order: oldest key first
        groups.setdefault(tiles[i].key, []).append(i)
    for members in groups.values():
        if not full_only:
            return tuple(members[:max_batch])
        if len(members) >= max_batch:
            return tuple(members[:max_batch])
    return ()


def next_action(*, finished: int, new: int, tiles: Sequence[QueuedTile], now: float,
                max_batch: int, max_wait: float) -> Action:
    """The worker's next move (see the module docstring for the policy)."""
    if finished > 0:
        return Decode()
    full = form_batch(tiles, max_batch, full_only=True)
    if full:
        return RunBatch(full)
    if new > 0 and len(tiles) < max_batch:
        return Encode()
    if not tiles:
        return Wait(None)
    batch = form_batch(tiles, max_batch)
    waited = now - tiles[batch[0]].enqueued
    if waited >= max_wait or len(tiles) >= max_batch:
        return RunBatch(batch)
    return Wait(max_wait - waited)
