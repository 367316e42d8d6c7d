"""The worker's scheduling policy as pure functions: what to do next, which tiles go together.

The worker has four kinds of work: decode a finished request, encode a new one (its
latent tiles then join the queue), run the UNet on a batch of queued tiles, or wait.
``next_action`` picks one from plain numbers; ``form_batch`` picks the tiles. Neither
touches a tensor, a thread or a clock, so the policy is unit-tested on its own.

**Who goes first: shortest remaining work, with ageing.** Every request has a *rank*,
its admission time plus the device time its remaining work needs (remaining tile-steps
times the measured seconds per tile). Lower ranks run first. A small request that
arrives while a large one runs has a far lower rank and overtakes it; a large request
cannot starve either, because its rank is fixed by when it came and shrinks as it makes
progress, while every later arrival's rank starts at its own (later) admission time:
once a request has waited as long as its remaining work takes, nothing that arrives
after it can overtake it.

**How big a batch is: cost-aware filling.** A batch holds the best-ranked request's
tiles (up to ``max_batch``), then tiles of the same key from the next requests by rank,
but only while the batch's predicted time stays within ``fill`` times the time of the
head's tiles alone (``BatchTimes`` measures batch times per size). On a GPU a batch of 8
costs about what a batch of 1 does, so batches fill; on a CPU time grows with the batch,
so a small request is slowed at most ``fill``-fold by the tiles riding along with it.

Policy, in order:

1. Decode finished requests first (the best-ranked one): the client is waiting.
2. Encode a new request while fewer than ``max_batch`` tiles are queued (its tiles can
   fill the batch), or when it outranks every queued tile (it goes first anyway).
3. Run the batch when it is full, or capped by its cost, or its head tile has waited
   ``max_wait``, or ``max_batch`` tiles wait in all; otherwise wait for more tiles.

Tiles only batch with tiles of the same key (model family, task and tile shapes: a
DiffIR image never shares a batch with ResShift tiles). With ``max_batch = 1`` the
policy is one tile at a time, best rank first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence, Union

DEFAULT_TILE_SECONDS = 0.05      # before any batch of a key was measured


@dataclass(frozen=True)
class QueuedTile:
    """What the policy sees of a queued tile: its batching key, when it was queued, the
    request it belongs to and that request's rank (lower runs first)."""

    key: Hashable
    enqueued: float       # seconds, any monotonic clock
    owner: Hashable = None
    rank: float = 0.0


@dataclass(frozen=True)
class Decode:
    """Decode the best-ranked finished request."""


@dataclass(frozen=True)
class Encode:
    """Encode the best-ranked new request."""


@dataclass(frozen=True)
class RunBatch:
    """Run the UNet on these queue positions (all of one key, best rank first)."""

    indices: tuple[int, ...]


@dataclass(frozen=True)
class Wait:
    """Nothing is due: sleep until woken, or at most ``timeout`` seconds (None: forever)."""

    timeout: Optional[float]


Action = Union[Decode, Encode, RunBatch, Wait]
Cost = Callable[[Hashable, int], Optional[float]]    # (key, batch size) -> seconds or None


@dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]
    capped: bool = False      # stopped by its predicted cost, not by a lack of tiles


def rank(admitted: float, tiles_left: int, seconds_per_tile: float) -> float:
    """A request's rank: when it came plus the device time its remaining work needs."""
    return admitted + tiles_left * seconds_per_tile


def form_batch(tiles: Sequence[QueuedTile], max_batch: int, cost: Optional[Cost] = None,
               fill: float = 2.0) -> Batch:
    """The next batch: the best-ranked request's tiles, then same-key tiles of the next
    requests by rank while ``cost(key, n) <= fill * cost(key, head tiles)`` (always,
    when ``cost`` is None or does not know the key yet)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not tiles:
        return Batch(())
    order = sorted(range(len(tiles)), key=lambda i: (tiles[i].rank, tiles[i].enqueued, i))
    head = tiles[order[0]]
    same_key = [i for i in order if tiles[i].key == head.key]
    chosen = [i for i in same_key if tiles[i].owner == head.owner][:max_batch]
    base = cost(head.key, len(chosen)) if cost is not None else None
    for i in same_key:
        if len(chosen) >= max_batch:
            break
        if tiles[i].owner == head.owner:
            continue
        if base is not None:
            predicted = cost(head.key, len(chosen) + 1)
            if predicted is not None and predicted > fill * base:
                return Batch(tuple(chosen), capped=True)
        chosen.append(i)
    return Batch(tuple(chosen))


def next_action(*, finished: int, new: Sequence[float], tiles: Sequence[QueuedTile],
                now: float, max_batch: int, max_wait: float, cost: Optional[Cost] = None,
                fill: float = 2.0) -> Action:
    """The worker's next move (see the module docstring). ``new``: the ranks of the
    requests not encoded yet."""
    if finished > 0:
        return Decode()
    best_queued = min((t.rank for t in tiles), default=None)
    if new and (len(tiles) < max_batch or min(new) < best_queued):
        return Encode()
    if not tiles:
        return Wait(None)
    batch = form_batch(tiles, max_batch, cost, fill)
    if len(batch.indices) >= max_batch or batch.capped or len(tiles) >= max_batch:
        return RunBatch(batch.indices)
    waited = now - tiles[batch.indices[0]].enqueued
    if waited >= max_wait:
        return RunBatch(batch.indices)
    return Wait(max_wait - waited)


@dataclass
class BatchTimes:
    """Measured seconds per batch, per key and batch size (moving averages), and the
    predictions the policy needs: a batch's time, and the seconds per tile that ranks
    remaining work."""

    decay: float = 0.7
    _seen: dict = field(default_factory=dict)     # key -> {size: seconds}

    def record(self, key: Hashable, size: int, seconds: float) -> None:
        sizes = self._seen.setdefault(key, {})
        old = sizes.get(size)
        sizes[size] = seconds if old is None else self.decay * old + (1 - self.decay) * seconds

    def predict(self, key: Hashable, size: int) -> Optional[float]:
        """Seconds for a batch of ``size`` tiles of ``key``: measured if that size ran,
        else a line through the measured sizes (proportional from the one measured
        size: the CPU's case, the cautious guess); None when the key never ran."""
        sizes = self._seen.get(key)
        if not sizes:
            return None
        if size in sizes:
            return sizes[size]
        if len(sizes) == 1:
            (n, t), = sizes.items()
            return t * size / n
        ns, ts = list(sizes), [sizes[n] for n in sizes]
        mean_n, mean_t = sum(ns) / len(ns), sum(ts) / len(ts)
        var = sum((n - mean_n) ** 2 for n in ns)
        slope = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in zip(ns, ts)) / var)
        intercept = max(0.0, mean_t - slope * mean_n)
        return intercept + slope * size

    def seconds_per_tile(self, key: Hashable, max_batch: int) -> float:
        """Device time per tile at full batches (the throughput rate), for ranking; any
        measured key stands in for one never seen."""
        t = self.predict(key, max_batch)
        if t is not None:
            return t / max_batch
        rates = [s[n] / n for s in self._seen.values() for n in s]
        return min(rates) if rates else DEFAULT_TILE_SECONDS
