"""Prometheus metrics with the names docs/design.md promises, in a registry per app.

A registry per ``create_app`` (not the global one) lets tests build many apps in one
process. Process metrics (CPU, memory, open fds, GC, Python info) are registered too.
Buckets fit diffusion latencies: a request takes from a fraction of a second (small
image, GPU) to minutes (large image, CPU); one UNet batch from milliseconds to seconds.
"""

from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from prometheus_client import gc_collector, platform_collector, process_collector

REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TILE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """All metric objects of one app; ``render()`` is the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        reg = self.registry = CollectorRegistry(auto_describe=True)
        process_collector.ProcessCollector(registry=reg)
        platform_collector.PlatformCollector(registry=reg)
        gc_collector.GCCollector(registry=reg)
        self.requests = Counter(
            "resshift_requests_total", "Restoration requests (sync and async) by task and "
            "HTTP status", ["task", "status"], registry=reg)
        self.request_duration = Histogram(
            "resshift_request_duration_seconds", "Time from admission to a finished result",
            ["task"], buckets=REQUEST_BUCKETS, registry=reg)
        self.queue_wait = Histogram(
            "resshift_queue_wait_seconds", "Time from admission until the worker starts "
            "the request (encoding)", ["task"], buckets=QUEUE_BUCKETS, registry=reg)
        self.inference = Histogram(
            "resshift_inference_duration_seconds", "Worker time per stage: encode and decode "
            "per request, denoise per UNet batch", ["task", "stage"], buckets=STAGE_BUCKETS,
            registry=reg)
        self.batch_size = Histogram(
            "resshift_batch_size", "Latent tiles per UNet call", ["task"],
            buckets=BATCH_BUCKETS, registry=reg)
        self.tiles_per_request = Histogram(
            "resshift_tiles_per_request", "Latent tiles per step of a request", ["task"],
            buckets=TILE_BUCKETS, registry=reg)
        self.queue_depth = Gauge(
            "resshift_queue_depth", "Latent tiles waiting for the UNet, all workers",
            registry=reg)
        self.inflight = Gauge(
            "resshift_inflight_requests", "Requests admitted and not finished (queued or "
            "running, sync and async)", registry=reg)
        self.gpu_memory = Gauge(
            "resshift_gpu_memory_bytes", "GPU memory allocated by the worker's tensors",
            ["device"], registry=reg)
        self.device_poisoned = Gauge(
            "resshift_device_poisoned", "1 when the device met a sticky CUDA error (illegal "
            "memory access, device-side assert, launch failure): its worker serves nothing "
            "until the process restarts", ["device"], registry=reg)
        self.decode_fallbacks = Counter(
            "resshift_decode_fallbacks_total", "Reduced-precision decodes that gave NaN/Inf "
            "and were redone in float32", ["task"], registry=reg)
        self.model_info = Gauge(
            "resshift_model_info", "Served models (value 1)",
            ["task", "model", "backend", "precision"], registry=reg)

    def render(self) -> bytes:
        return generate_latest(self.registry)
