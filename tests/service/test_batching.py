"""The batching policy, as pure functions: no threads, no tensors, no HTTP."""

import pytest

from service.batching import (BatchTimes, Decode, Encode, QueuedTile, RunBatch, Wait,
                              form_batch, next_action, rank)

A, B = ("sr", (1, 3, 64, 64)), ("sr", (1, 3, 32, 64))


def tile(key, t=0.0, owner="r1", r=0.0):
    return QueuedTile({"A": A, "B": B}[key], t, owner, r)


def act(queue, finished=0, new=(), now=10.0, max_batch=4, max_wait=0.05, cost=None):
    return next_action(finished=finished, new=list(new), tiles=queue, now=now,
                       max_batch=max_batch, max_wait=max_wait, cost=cost)


def linear(seconds_per_tile=1.0, fixed=0.0):
    """A CPU-like cost: batch time grows with its size."""
    return lambda key, n: fixed + seconds_per_tile * n


def test_the_best_ranked_request_leads_the_batch_and_others_fill_it():
    q = [tile("A", 0.0, "big", 100.0), tile("A", 0.0, "big", 100.0),
         tile("A", 5.0, "small", 6.0), tile("B", 1.0, "thin", 3.0)]
    assert form_batch(q, 4).indices == (3,)              # best rank, alone in its key
    assert form_batch(q[:3], 4).indices == (2, 0, 1)     # small first, big fills
    assert form_batch(q[:3], 2).indices == (2, 0)
    with pytest.raises(ValueError):
        form_batch(q, 0)


def test_filling_stops_where_the_batch_would_cost_more_than_fill_times_the_head():
    q = [tile("A", 0.0, "small", 1.0)] + [tile("A", 0.0, "big", 50.0)] * 7
    cpu = form_batch(q, 8, cost=linear(), fill=2.0)
    assert cpu.indices == (0, 1) and cpu.capped          # 2 tiles cost 2x one
    gpu = form_batch(q, 8, cost=linear(0.01, fixed=1.0), fill=2.0)
    assert len(gpu.indices) == 8 and not gpu.capped      # batching is nearly free
    unknown = form_batch(q, 8, cost=lambda key, n: None)
    assert len(unknown.indices) == 8                     # nothing measured: fill


def test_finished_requests_are_decoded_first():
    assert act([tile("A")] * 4, finished=1, new=[0.0]) == Decode()


def test_a_full_batch_runs_before_new_requests_that_rank_lower():
    assert act([tile("A", 9.99, r=5.0)] * 4, new=[9.0]) == RunBatch((0, 1, 2, 3))


def test_a_new_request_that_outranks_the_queue_is_encoded_at_once():
    assert act([tile("A", 9.99, r=500.0)] * 4, new=[12.0]) == Encode()
    assert act([tile("A", 0.0)], new=[99.0]) == Encode()    # it can still fill the batch
    assert act([], new=[1.0]) == Encode()


def test_a_partial_batch_waits_for_max_wait_then_runs():
    q = [tile("A", 9.98), tile("A", 9.99)]
    action = act(q, now=10.0, max_wait=0.05)
    assert isinstance(action, Wait) and action.timeout == pytest.approx(0.03)
    assert act(q, now=10.04, max_wait=0.05) == RunBatch((0, 1))


def test_a_batch_capped_by_its_cost_runs_without_waiting():
    q = [tile("A", 9.99, "small", 1.0), tile("A", 9.99, "big", 50.0), tile("A", 9.99, "big", 50.0)]
    assert act(q, now=10.0, cost=linear()) == RunBatch((0, 1))


def test_idle_worker_waits_without_timeout():
    assert act([]) == Wait(None)


def test_max_wait_zero_never_waits():
    assert act([tile("A", 10.0)], now=10.0, max_wait=0.0) == RunBatch((0,))


def test_rank_is_admission_plus_remaining_work():
    assert rank(10.0, 1000, 0.01) == pytest.approx(20.0)
    assert rank(10.0, 0, 0.01) == 10.0


def test_batch_times_predict_from_what_was_measured():
    times = BatchTimes(decay=0.5)
    assert times.predict("k", 4) is None
    times.record("k", 1, 1.0)
    assert times.predict("k", 4) == pytest.approx(4.0)     # one size: proportional
    times.record("k", 8, 1.2)
    assert times.predict("k", 8) == pytest.approx(1.2)
    assert 1.0 < times.predict("k", 4) < 1.2               # a line through both
    times.record("k", 1, 2.0)                              # moving average
    assert times.predict("k", 1) == pytest.approx(1.5)
    assert times.seconds_per_tile("k", 8) == pytest.approx(0.15)
    assert times.seconds_per_tile("other", 8) == pytest.approx(0.15)


class Sim:
    """The worker loop in miniature: requests of T steps with some tiles per step, one
    key, batch time = cost(n); encode and decode are free. Counts batches."""

    def __init__(self, max_batch=8, cost=linear(), fill=2.0, steps=4):
        self.max_batch, self.cost, self.fill, self.steps = max_batch, cost, fill, steps
        self.now, self.batches, self.reqs, self.done = 0.0, 0, {}, {}

    def add(self, name, tiles_per_step):
        self.reqs[name] = {"tiles": tiles_per_step, "step": 0, "left": tiles_per_step,
                           "admitted": self.now}

    def queue(self):
        out = []
        for name, r in self.reqs.items():
            work_left = (self.steps - r["step"]) * r["tiles"]
            out += [QueuedTile(A, r["admitted"], name, rank(r["admitted"], work_left, 1.0))
                    ] * r["left"]
        return out

    def run_batch(self):
        q = self.queue()
        batch = form_batch(q, self.max_batch, self.cost, self.fill)
        self.now += self.cost(A, len(batch.indices))
        self.batches += 1
        for i in batch.indices:
            r = self.reqs[q[i].owner]
            r["left"] -= 1
        for name, r in list(self.reqs.items()):
            if r["left"] == 0:
                r["step"] += 1
                r["left"] = r["tiles"]
                if r["step"] == self.steps:
                    self.done[name] = (self.now, self.batches)
                    del self.reqs[name]


@pytest.mark.parametrize("cost", [linear(), linear(0.02, fixed=1.0)], ids=["cost-grows-with-batch", "batching-nearly-free"])
def test_a_small_request_overtakes_a_large_one_and_the_large_one_still_finishes(cost):
    sim = Sim(cost=cost)
    sim.add("large", 400)
    for _ in range(20):
        sim.run_batch()
    idle = Sim(cost=cost)
    idle.add("small", 1)
    while idle.reqs:
        idle.run_batch()
    alone = idle.done["small"][0]
    one_batch = cost(A, 8)
    sim.add("small", 1)
    start, start_batches = sim.now, sim.batches
    while "small" in sim.reqs:
        sim.run_batch()
    took, batches = sim.done["small"][0] - start, sim.done["small"][1] - start_batches
    assert batches == 4                             # one batch per step, nothing in between
    assert took <= 2 * alone + one_batch, (took, alone)
    while sim.reqs:
        sim.run_batch()
    assert "large" in sim.done


def test_a_stream_of_small_requests_cannot_starve_a_large_one():
    sim = Sim(cost=linear(), max_batch=1)          # no filling at all: strict priority
    sim.add("large", 10)
    n = 0
    while "large" in sim.reqs and sim.batches < 10_000:
        if sim.batches % 2 == 0:                   # a new small request every 2 batches
            sim.add(f"s{n}", 1)
            n += 1
        sim.run_batch()
    assert "large" in sim.done                     # ageing: it overtakes later arrivals
    assert sim.done["large"][1] < 200
