"""Prometheus gauges read from Redis at scrape time: the scale-out signals.

Registered by ``create_app`` in the api and worker roles. Every scrape asks Redis (at
most once a second, cached) for the stream's length, pending count and oldest ages and
for the per-worker view of the consumer group (``RedisQueue.stats``), so any process's
``/metrics`` shows the whole deployment's queue, and an autoscaler can use any of them.
With Redis down only ``resshift_redis_up 0`` is reported.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Optional

from prometheus_client.core import GaugeMetricFamily, Metric

from .redis_queue import QueueStats, QueueUnavailable, RedisQueue

CACHE_S = 1.0


class StreamCollector:
    """A custom collector (``collect`` is called on every scrape)."""

    def __init__(self, queue: RedisQueue):
        self.queue = queue
        self._lock = threading.Lock()
        self._at = 0.0
        self._stats: Optional[QueueStats] = None

    def describe(self) -> list[Metric]:
        return []            # no Redis call at registration time

    def _read(self) -> Optional[QueueStats]:
        with self._lock:
            if time.monotonic() - self._at >= CACHE_S:
                try:
                    self._stats = self.queue.stats()
                except QueueUnavailable:
                    self._stats = None
                self._at = time.monotonic()
            return self._stats

    def collect(self) -> Iterator[Metric]:
        st = self._read()
        yield GaugeMetricFamily("resshift_redis_up", "1 when Redis answered the last "
                                "scrape's queries", value=1 if st is not None else 0)
        if st is None:
            return
        for name, doc, value in (
                ("resshift_stream_length", "Unfinished jobs in the Redis stream (queued + "
                 "in flight: finished entries are deleted)", st.length),
                ("resshift_stream_pending", "Jobs delivered to a worker and not finished",
                 st.pending),
                ("resshift_stream_lag", "Jobs no worker has taken yet", st.lag),
                ("resshift_stream_oldest_age_seconds", "Age of the oldest unfinished job",
                 st.oldest_age_s),
                ("resshift_stream_oldest_pending_age_seconds", "Age of the oldest job "
                 "delivered to a worker and not finished", st.oldest_pending_age_s),
                ("resshift_dead_letters", "Jobs in the dead-letter stream", st.dead_letters)):
            yield GaugeMetricFamily(name, doc, value=value)
        pending = GaugeMetricFamily("resshift_worker_pending", "Jobs a worker holds "
                                    "(delivered, not finished)", labels=["worker"])
        idle = GaugeMetricFamily("resshift_worker_idle_seconds", "Time since a worker last "
                                 "read from the stream", labels=["worker"])
        for worker, row in sorted(st.consumers.items()):
            pending.add_metric([worker], row["pending"])
            idle.add_metric([worker], row["idle_s"])
        yield pending
        yield idle
