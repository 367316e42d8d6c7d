"""The worker: one thread per device that owns the models and does all tensor work.

It loads every served model, runs one warm-up batch per model, then loops: take new
items from the inbox, drop those canceled or past their deadline (their tiles leave the
queue), and do what ``service.batching.next_action`` says: decode a finished request,
encode a new one (the model's ``make_job``), or run the network on a batch of
same-key work gathered across requests (the model's ``run_batch``; both members of
``model.family.ModelFamily``). An error fails the requests it touched, never the
worker.

Both model families step the same way. ResShift: latent tiles, one UNet call per tile
and step, tiles of different requests and timesteps mixing. DiffIR: the prior draw,
CPEN and the 4-step IPR loop run per request in "encode"; the batched work is the
DIRformer over each image (or each of its tiles, for large images), in "denoise";
blending and cropping are "decode". The batch key is (family, task, shapes), so work of
different families or models never shares a batch.

On a CUDA device the thread makes that device its current one (TensorRT and
onnxruntime use the thread's current device, not the tensors') and queues all its work
on a stream of its own; results are synchronized before they leave the thread. A sticky
CUDA error (``service.cuda_errors``) poisons the worker: its requests fail with 503,
``/readyz`` names the device, and it serves nothing more until the process restarts.

The model layer is imported lazily (in the thread), so importing this module is cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import batching
from .cuda_errors import poisoning_reason
from .errors import DevicePoisoned, InferenceFailed, ServiceError, ShuttingDown
from .metrics import Metrics
from .work_item import WorkItem
from .settings import Settings
from .schemas import JobState
from .validation import ServedModel

log = logging.getLogger("resshift.worker")


@dataclass
class _Active:
    """A work item the worker has taken in, with its model-layer state."""

    item: WorkItem
    job: Any = None                         # TiledJob / DiffIRJob once encoding starts
    net_pixels: int = 0                     # canvas pixels through the network, all steps
    steps: int = 1
    rank: float = 0.0                       # batching.rank: lower runs first

    @property
    def task(self) -> str:
        return self.item.request.task


@dataclass
class _Queued:
    """A work item (latent tile, DiffIR image or tile) waiting for the network."""

    owner: _Active
    index: int                              # position in its job's pending_tiles()
    work: Any                               # model.stepper.TileWork / DiffIRWork
    view: batching.QueuedTile


class Worker(threading.Thread):
    """Owns one device: models, the tile queue, the batching loop (see module doc)."""

    def __init__(self, device: str, settings: Settings, metrics: Metrics, index: int = 0):
        super().__init__(name=f"resshift-worker-{index}-{device}", daemon=True)
        self.device = device
        self.settings = settings
        self.metrics = metrics
        # starting, loading, warming up, ready, stopped, failed, poisoned
        self.state = "starting"
        self.error: Optional[str] = None
        self.poisoned: Optional[str] = None     # the sticky CUDA error, once met
        self.served: dict[str, ServedModel] = {}
        self.load = 0                    # items submitted and not finished (for dispatch)
        self._restorers: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._inbox: deque[WorkItem] = deque()
        self._stop_at: Optional[float] = None
        self._new: deque[_Active] = deque()
        self._finished: deque[_Active] = deque()
        self._stepping: list[_Active] = []
        self._queue: list[_Queued] = []
        self._depth_reported = 0
        # measured costs: network batches (per key and size) and encode + decode (per
        # task, by output pixels); they rank requests and price admission
        self._times = batching.BatchTimes()
        self._io_times = batching.BatchTimes()
        self._key_pixels: dict = {}      # batch key (family, task, shapes) -> tile pixels
        self._shapes: dict = {}

    # -- called from other threads ------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        with self._cond:
            self.load += 1
            item.future.add_done_callback(self._on_item_done)
            self._inbox.append(item)
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def stop(self, grace_s: float) -> None:
        with self._cond:
            self._stop_at = time.monotonic() + grace_s
            self._cond.notify()

    def _on_item_done(self, _future) -> None:
        with self._cond:
            self.load -= 1

    # -- thread body ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            with self._on_device():
                self._load_models()
                self._warm_up()
                self.state = "ready"
                log.info("worker on %s ready: %s", self.device, ", ".join(sorted(self.served)))
                self._serve()
            if self.poisoned is None:
                self.state = "stopped"
        except BaseException as exc:   # the thread must report, not vanish
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.exception("worker on %s failed", self.device)
            self._check_poisoned(exc)
        finally:
            self._fail_all(self._poison_error() if self.poisoned is not None else
                           ShuttingDown("the server stopped before this request finished; "
                                        "retry it"))

    def _on_device(self):
        """The thread's device context: on CUDA, ``set_device`` (per thread: TensorRT and
        onnxruntime take the current device, so a worker on cuda:1 would otherwise
        run them on GPU 0) and a stream of its own, so that workers of one process never
        serialize on the default stream. Elsewhere nothing."""
        import contextlib

        import torch
        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        device = torch.device(self.device)
        torch.cuda.set_device(device)
        self._stream = torch.cuda.Stream(device)
        return torch.cuda.stream(self._stream)

    def _sync(self) -> None:
        """Wait for the work queued on this worker's stream: results are complete before
        they leave the thread, a batch's time is its GPU time, and an asynchronous CUDA
        error surfaces in the batch that caused it."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.synchronize()

    def _load_models(self) -> None:
        import torch

        import model
        if self.settings.torch_threads:
            # Per thread under OpenMP: it must be set here, in the worker's own thread.
            torch.set_num_threads(self.settings.torch_threads)
        self.state = "loading"
        for task, path in self.settings.models.items():
            restorer = model.load(path, device=self.device)
            backend_name, precision = "torch", None
            if (self.settings.backend != "torch" or self.settings.precision != "fp32"
                    or restorer.device.type == "cuda"):
                # the tiles of every request then run on that backend, batched as usual;
                # on CUDA always, as that is where TF32 is set (export.backends.apply_tf32)
                from export.families import create_backend
                backend = create_backend(self.settings.backend, restorer, model_dir=path,
                                         tile=self.settings.tile,
                                         precision=self.settings.precision,
                                         tf32=self.settings.tf32,
                                         max_batch=self.settings.max_batch)
                restorer = restorer.using(backend)
                backend_name, precision = _backend_labels(backend)
                if hasattr(backend, "on_fallback"):
                    counter = self.metrics.decode_fallbacks.labels(task)
                    backend.on_fallback = lambda _why, c=counter: c.inc()
            latent_tile = restorer.latent_tile(self.settings.tile)
            if backend_name != "torch":
                self._prepare(task, backend, latent_tile)
            net = next(iter(restorer.networks().values()))     # the denoising network
            name = restorer.name if restorer.name not in ("", "custom") else Path(str(path)).name
            self._restorers[task] = restorer
            shape = restorer.work_shape(restorer.serving_tile(self.settings.tile))
            self._shapes[task] = shape
            precision = precision or str(next(net.parameters()).dtype).replace("torch.", "")
            self.served[task] = ServedModel(
                task=task, name=name, family=restorer.family, kind=restorer.task,
                scale=restorer.scale, steps=restorer.steps, needs_mask=restorer.needs_mask,
                latent_tile=latent_tile, input_multiple=restorer.input_multiple,
                backend=backend_name, precision=precision,
                # hashing every weight costs seconds for full-size models: only the
                # worker role needs it (the Redis idempotency key)
                version=(_version(restorer, backend_name, precision)
                         if self.settings.role == "worker" else ""),
                work=shape.as_dict())
            self.metrics.model_info.labels(task, name, backend_name,
                                           self.served[task].precision).set(1)

    def _prepare(self, task: str, backend, latent_tile: Optional[int]) -> None:
        """Export and open the graphs of the configured tile shape now, so that no
        request waits for an export (minutes for full-size models on a CPU). Smaller
        shapes (images under one tile) are still exported on first sight."""
        prepare = getattr(backend, "prepare", None)
        if prepare is None:
            return
        self.state = "exporting graphs"
        start = time.monotonic()
        opened = prepare([(latent_tile, latent_tile)] if latent_tile else [])
        log.info("task %s: %s graphs ready in %.1f s: %s", task, backend.name,
                 time.monotonic() - start, ", ".join(opened))

    def _warm_up(self) -> None:
        """Small requests per model through the same stepping code: readiness means a
        batch really ran (kernels chosen, memory allocated). They also calibrate the
        costs that rank requests and price admission: a tiny image and one of a full
        tile, each timed stage by stage, plus one batch of two tiles (how batch time
        grows with size on this device)."""
        self.state = "warming up"
        for task, restorer in self._restorers.items():
            shape = self._shapes[task]
            if self.served[task].kind == "face":
                sides = [self.settings.face_size]
            else:
                tiny = max(16, self.settings.min_side)
                # the input side whose canvas is one full tile
                side = shape.tile * shape.factor // shape.scale
                full = -(-side // shape.multiple) * shape.multiple if shape.tile else tiny
                sides = sorted({tiny, max(tiny, full)})
            for side in sides:
                self._calibrate(task, side)
            self._publish_rates(task)

    def _calibrate(self, task: str, side: int) -> None:
        """Run one grey side x side request, timing its encode, batches and decode."""
        restorer = self._restorers[task]
        image = np.full((side, side, 3), 128, np.uint8)
        mask = np.zeros((side, side), bool) if self.served[task].needs_mask else None
        job = self._job(task, image, mask, seed=0)
        start = time.monotonic()
        job.encode()
        self._sync()
        io = time.monotonic() - start
        paired = self.settings.max_batch < 2
        while not job.done:
            work = job.pending_tiles()
            key = (restorer.family, task, work[0].key)
            self._key_pixels.setdefault(key, work[0].pixels)
            preds = []
            for item in work:            # one at a time: the batch-of-one time
                start = time.monotonic()
                preds += restorer.run_batch([item])
                self._sync()
                self._times.record(key, 1, time.monotonic() - start)
            if not paired:
                start = time.monotonic()
                restorer.run_batch([work[0], work[0]])
                self._sync()
                self._times.record(key, 2, time.monotonic() - start)
                paired = True
            job.complete_step(preds)
        start = time.monotonic()
        out = job.finish()
        io += time.monotonic() - start
        self._io_times.record(task, _size_bucket(out.shape[0] * out.shape[1]), io)

    def _job(self, task: str, image: np.ndarray, mask: Optional[np.ndarray], seed: int):
        """A step-by-step job for ``task``'s model. RESSHIFT_TILE is a ResShift latent
        tile; DiffIR models use their own policy (whole up to a size, tiles beyond)."""
        restorer = self._restorers[task]
        return restorer.make_job(image, mask=mask, seed=seed,
                                 tile=restorer.serving_tile(self.settings.tile))

    def _serve(self) -> None:
        s = self.settings
        while True:
            if self.poisoned is not None:
                # the device cannot run anything: everything here gets the 503 now
                self._fail_all(self._poison_error())
                with self._cond:
                    if self._stop_at is not None:
                        return
                    if not self._inbox:
                        self._cond.wait()
                continue
            with self._cond:
                while self._inbox:
                    self._new.append(self._intake(self._inbox.popleft()))
                stopping = self._stop_at is not None
            now = time.monotonic()
            if stopping and (now >= self._stop_at or not self._has_work()):
                return
            self._drop_abandoned(now)
            self._report_depth()
            action = batching.next_action(
                finished=len(self._finished), new=[a.rank for a in self._new],
                tiles=[q.view for q in self._queue], now=now, max_batch=s.max_batch,
                max_wait=s.max_wait_ms / 1000.0, cost=self._times.predict,
                fill=s.batch_fill)
            if isinstance(action, batching.Wait):
                self._sleep(action.timeout, now)
            elif isinstance(action, batching.Decode):
                self._decode(_take_best(self._finished))
            elif isinstance(action, batching.Encode):
                self._encode(_take_best(self._new))
            else:
                self._run_batch(action.indices)

    # -- ranks and rates ------------------------------------------------------------------
    def _intake(self, item: WorkItem) -> _Active:
        """A new item with its size priced (the work shape of its model) and ranked."""
        active = _Active(item)
        shape = self._shapes.get(item.request.task)
        if shape is not None:
            h, w = item.request.pixels.shape[:2]
            active.net_pixels, active.steps = shape.net_pixels(h, w), shape.steps
        self._rerank(active)
        return active

    def _rerank(self, active: _Active) -> None:
        """Rank = admission time + the device time of the network work still to do."""
        done = active.job.steps_done if active.job is not None else 0
        left = active.net_pixels * max(0, active.steps - done) / max(1, active.steps)
        active.rank = batching.rank(active.item.admitted, left, self._net_rate(active.task))

    def _net_rate(self, task: str) -> float:
        """Seconds per canvas pixel through the network at full batches (the best
        measured over this task's keys; any task's before this one ran)."""
        ran = {k: px for k, px in self._key_pixels.items() if self._times.predict(k, 1)}
        rates = {k: self._times.seconds_per_tile(k, self.settings.max_batch) / px
                 for k, px in ran.items()}
        own = [r for k, r in rates.items() if k[1] == task]      # key = (family, task, ...)
        if own or rates:
            return min(own or rates.values())
        return batching.DEFAULT_TILE_SECONDS / (64 * 64)

    def _io_rate(self, task: str, out_pixels: int) -> float:
        """Seconds per output pixel of encoding + decoding at this size (measured)."""
        t = self._io_times.predict(task, out_pixels)
        return t / out_pixels if t is not None and out_pixels else 0.0

    def _publish_rates(self, task: str) -> None:
        """Refresh what admission prices requests of ``task`` with (``ServedModel``)."""
        served = self.served.get(task)
        if served is None or task not in self._shapes:
            return
        big = 2048 * 2048           # io rate quoted for large outputs (what admission refuses)
        self.served[task] = replace(served, net_rate=self._net_rate(task),
                                    io_rate=self._io_rate(task, big))

    def _has_work(self) -> bool:
        return bool(self._new or self._finished or self._stepping)

    def _sleep(self, timeout: Optional[float], now: float) -> None:
        """Wait for new items / cancellations, waking in time for the earliest deadline."""
        limits = [timeout] if timeout is not None else []
        limits += [a.item.deadline - now for a in self._all_active()]
        if self._stop_at is not None:
            limits.append(self._stop_at - now)
        with self._cond:
            if not self._inbox:
                self._cond.wait(max(0.0, min(limits)) if limits else None)

    # -- stages ---------------------------------------------------------------------------
    def _encode(self, active: _Active) -> None:
        item, req = active.item, active.item.request
        start = time.monotonic()
        item.state = JobState.running
        item.timings["queue"] = start - item.admitted
        self.metrics.queue_wait.labels(req.task).observe(item.timings["queue"])
        try:
            active.job = self._job(req.task, req.pixels, req.mask, req.seed)
            active.job.encode()
            self._sync()
        except Exception as exc:
            self._fail(active, exc)
            return
        item.timings["encode"] = time.monotonic() - start
        self.metrics.inference.labels(req.task, "encode").observe(item.timings["encode"])
        self.metrics.tiles_per_request.labels(req.task).observe(active.job.tiles_per_step)
        self._stepping.append(active)
        self._enqueue(active)

    def _enqueue(self, active: _Active) -> None:
        now = time.monotonic()
        work = active.job.pending_tiles()
        family = self._restorers[active.task].family
        for k, w in enumerate(work):
            key = (family, active.task, w.key)
            self._key_pixels.setdefault(key, w.pixels)
            view = batching.QueuedTile(key=key, enqueued=now, owner=id(active),
                                       rank=active.rank)
            self._queue.append(_Queued(active, k, w, view))

    def _run_batch(self, indices: tuple[int, ...]) -> None:
        chosen = set(indices)
        batch = [self._queue[i] for i in indices]
        self._queue = [q for i, q in enumerate(self._queue) if i not in chosen]
        owners = list({id(q.owner): q.owner for q in batch}.values())
        task = batch[0].owner.task
        start = time.monotonic()
        try:
            preds = self._restorers[task].run_batch([q.work for q in batch])
            self._sync()
        except Exception as exc:
            log.exception("batch of %d work items (task %s) failed", len(batch), task)
            for owner in owners:
                self._fail(owner, exc)
            return
        elapsed = time.monotonic() - start
        self._times.record(batch[0].view.key, len(batch), elapsed)
        self._publish_rates(task)
        self.metrics.inference.labels(task, "denoise").observe(elapsed)
        self.metrics.batch_size.labels(task).observe(len(batch))
        self._report_gpu_memory()
        ready = []
        for q, pred in zip(batch, preds):
            try:
                if q.owner.job.accept(q.index, pred):
                    ready.append(q.owner)
            except Exception as exc:
                self._fail(q.owner, exc)
        for owner in owners:
            owner.item.timings["denoise"] += elapsed
        for owner in ready:
            if owner.item.future.done():      # failed above
                continue
            try:
                owner.job.complete_step()
                self._rerank(owner)
                if owner.job.done:
                    self._stepping.remove(owner)
                    self._finished.append(owner)
                else:
                    self._enqueue(owner)
            except Exception as exc:
                self._fail(owner, exc)

    def _decode(self, active: _Active) -> None:
        start = time.monotonic()
        try:
            pixels = active.job.finish()
        except Exception as exc:
            self._fail(active, exc)
            return
        active.item.timings["decode"] = time.monotonic() - start
        self.metrics.inference.labels(active.task, "decode").observe(
            active.item.timings["decode"])
        out_pixels = pixels.shape[0] * pixels.shape[1]
        self._io_times.record(active.task, _size_bucket(out_pixels),
                              active.item.timings["encode"] + active.item.timings["decode"])
        self._publish_rates(active.task)
        active.item.succeed(pixels)

    # -- dropping and failing ------------------------------------------------------------
    def _all_active(self) -> list[_Active]:
        return [*self._new, *self._stepping, *self._finished]

    def _drop_abandoned(self, now: float) -> None:
        for active in self._all_active():
            reason = active.item.abandon_reason(now)
            if reason is not None:
                self._fail(active, reason)

    def _fail(self, active: _Active, error: BaseException) -> None:
        """Take ``active`` out of every structure (its tiles leave the queue) and fail it."""
        if not isinstance(error, ServiceError) and self._check_poisoned(error):
            error = self._poison_error()
        elif not isinstance(error, ServiceError) and not _is_input_error(error):
            log.error("request %s failed in the worker: %s", active.item.id, error,
                      exc_info=error)
            error = InferenceFailed(f"the worker could not finish this request "
                                    f"({type(error).__name__}: {error})")
        self._queue = [q for q in self._queue if q.owner is not active]
        for holder in (self._new, self._finished):
            if active in holder:
                holder.remove(active)
        if active in self._stepping:
            self._stepping.remove(active)
        self._report_depth()        # before the caller hears of it: /metrics is current then
        active.item.fail(error)

    def _check_poisoned(self, error: BaseException) -> bool:
        """Mark the worker poisoned when ``error`` is a sticky CUDA error (once: the
        log line and the metric say so). True when the worker is poisoned."""
        if self.poisoned is not None:
            return True
        # only CUDA errors carry these texts, so no device check is needed here
        reason = poisoning_reason(error)
        if reason is None:
            return False
        self.poisoned = reason
        self.error = f"sticky CUDA error on {self.device}: {reason}"
        self.state = "poisoned"
        self.metrics.device_poisoned.labels(self.device).set(1)
        log.critical("device %s is unusable after a sticky CUDA error (%s); its worker "
                     "serves nothing more and /readyz answers 503 until the process "
                     "restarts", self.device, reason, exc_info=error)
        return True

    def _poison_error(self) -> DevicePoisoned:
        return DevicePoisoned(f"the GPU {self.device} of this server failed ({self.poisoned}) "
                              f"and cannot run requests until the server restarts; retry "
                              f"on another instance")

    def _fail_all(self, error: ServiceError) -> None:
        with self._cond:
            leftovers = list(self._inbox)
            self._inbox.clear()
        for active in self._all_active():
            self._fail(active, error)
        for item in leftovers:
            item.fail(error)
        self._report_depth()

    # -- metrics ------------------------------------------------------------------------------
    def _report_depth(self) -> None:
        depth = len(self._queue)
        if depth != self._depth_reported:
            self.metrics.queue_depth.inc(depth - self._depth_reported)
            self._depth_reported = depth

    def _report_gpu_memory(self) -> None:
        if not self.device.startswith("cuda"):
            return
        import torch
        self.metrics.gpu_memory.labels(self.device).set(torch.cuda.memory_allocated(self.device))


def _take_best(pending: deque) -> _Active:
    """Remove and return the best-ranked item (the oldest among equals)."""
    best = min(range(len(pending)), key=lambda i: (pending[i].rank, i))
    active = pending[best]
    del pending[best]
    return active


def _size_bucket(pixels: int) -> int:
    """Sizes rounded to two significant digits: one moving average per size class."""
    if pixels < 100:
        return pixels
    digits = len(str(pixels)) - 2
    return round(pixels / 10 ** digits) * 10 ** digits


def _backend_labels(backend) -> tuple[str, str]:
    """(backend, precision) as /v1/models and resshift_model_info show them."""
    precision = getattr(backend, "precision", None)
    if backend.name == "split" and precision not in (None, "fp32"):
        precision = "float32+bfloat16-decoder"      # onnxruntime UNet, torch bf16 decoder
    elif precision in (None, "fp32"):
        precision = "float32"
    elif precision.startswith("bf16"):
        precision = "bfloat16"
    elif precision == "fp16":
        precision = "float16"
    return backend.name, precision


def _version(restorer, backend: str, precision: str) -> str:
    """Identifies the output a model gives: its weights, sampling settings (the model's
    diffusion section: steps, schedule, noise_scale), backend and precision. A stored
    result (Redis idempotency) is reused only while this stays the same."""
    import hashlib
    import json

    from export.manifest import weights_hash
    modules = [m for _, m in sorted(restorer.networks().items())]
    sampling = json.dumps(getattr(getattr(restorer, "config", None), "diffusion", None),
                          sort_keys=True, default=str)
    text = f"{weights_hash(modules)}:{restorer.family}:{sampling}:{backend}:{precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_input_error(error: BaseException) -> bool:
    from model.errors import ModelError
    return isinstance(error, ModelError)
