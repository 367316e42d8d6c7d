"""The batching policy, as pure functions: no threads, no tensors, no HTTP."""

import pytest

from service.batching import (Decode, Encode, QueuedTile, RunBatch, Wait, form_batch,
                              next_action)

A, B = ("sr", (1, 3, 64, 64)), ("sr", (1, 3, 32, 64))


def tiles(*spec):
    """tiles(("A", 0.0), ("B", 1.0)...) -> QueuedTile list (key name, enqueue time)."""
    keys = {"A": A, "B": B}
    return [QueuedTile(keys[k], t) for k, t in spec]


def act(queue, finished=0, new=0, now=10.0, max_batch=4, max_wait=0.05):
    return next_action(finished=finished, new=new, tiles=queue, now=now, max_batch=max_batch,
                       max_wait=max_wait)


def test_form_batch_takes_the_oldest_key_and_its_oldest_tiles_up_to_max_batch():
    q = tiles(("B", 3.0), ("A", 1.0), ("A", 2.0), ("B", 0.5), ("A", 0.9), ("A", 5.0))
    assert form_batch(q, 2) == (3, 0)            # B holds the oldest tile (0.5)
    assert form_batch(q, 10) == (3, 0)
    assert form_batch(q[1:], 3) == (2,)            # the old B goes alone, not with As
    assert form_batch(q[:3], 3) == (1, 2)          # without it: the As, oldest first
    assert form_batch(tiles(("A", 1.0), ("A", 1.0)), 4) == (0, 1)   # ties keep queue order


def test_form_batch_full_only_finds_a_full_group_behind_an_older_one():
    q = tiles(("A", 0.0), ("B", 1.0), ("B", 2.0), ("B", 3.0))
    assert form_batch(q, 3, full_only=True) == (1, 2, 3)
    assert form_batch(q, 4, full_only=True) == ()
    with pytest.raises(ValueError):
        form_batch(q, 0)


def test_finished_requests_are_decoded_first():
    assert act(tiles(*[("A", 0.0)] * 4), finished=1, new=3) == Decode()


def test_a_full_batch_runs_at_once_even_with_new_requests_waiting():
    assert act(tiles(*[("A", 9.99)] * 4), new=5) == RunBatch((0, 1, 2, 3))


def test_new_requests_are_encoded_while_they_can_still_fill_the_batch():
    assert act(tiles(("A", 0.0)), new=2) == Encode()
    assert act([], new=1) == Encode()


def test_no_starvation_when_enough_tiles_wait():
    # 4 tiles of two shapes (none full) with arrivals pending: run the oldest group
    q = tiles(("A", 9.0), ("B", 9.5), ("A", 9.6), ("B", 9.7))
    assert act(q, new=10) == RunBatch((0, 2))


def test_a_partial_batch_waits_for_max_wait_then_runs():
    q = tiles(("A", 9.98), ("A", 9.99))
    action = act(q, now=10.0, max_wait=0.05)
    assert isinstance(action, Wait) and action.timeout == pytest.approx(0.03)
    assert act(q, now=10.04, max_wait=0.05) == RunBatch((0, 1))


def test_idle_worker_waits_without_timeout():
    assert act([]) == Wait(None)


def test_max_batch_one_is_one_request_at_a_time():
    # a tile in flight keeps new requests out until the request is done
    assert act(tiles(("A", 9.0)), new=3, max_batch=1) == RunBatch((0,))
    assert act([], new=3, max_batch=1) == Encode()


def test_max_wait_zero_never_waits():
    assert act(tiles(("A", 10.0)), now=10.0, max_wait=0.0) == RunBatch((0,))
