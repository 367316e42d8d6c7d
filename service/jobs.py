"""Asynchronous jobs in memory (the embedded mode): ids, states, results, a TTL.

``POST /v1/jobs`` submits a work item and records it here; an asyncio task awaits the
item, encodes the image (in a thread, off the worker) and keeps the bytes until the
TTL passes. Finished jobs older than ``RESSHIFT_JOB_TTL_S`` are purged on access and
by a periodic sweep.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from starlette.concurrency import run_in_threadpool

from model.imageio import encode_image

from .errors import (Canceled, JobNotFinished, JobNotFound, JobNotSucceeded, ServiceError,
                     status_and_code)
from .work_item import WorkItem
from .schemas import ErrorDetail, JobOut, JobState


async def encoded(result: "np.ndarray | bytes", output_format: str) -> bytes:
    """The response body: pixels are encoded here (in a thread); bytes come encoded
    already from a worker process (Redis mode)."""
    if isinstance(result, bytes):
        return result
    return await run_in_threadpool(encode_image, result, output_format)


@dataclass
class Job:
    item: WorkItem
    owner: Optional[str] = None      # the creator's key digest (deps.caller); None: open
    created: float = field(default_factory=time.monotonic)
    result: Optional[bytes] = None
    error: Optional[ErrorDetail] = None
    finished_at: Optional[float] = None
    encoding: bool = False

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def status(self) -> JobState:
        # The image is encoded after the worker is done: succeeded means "result ready".
        state = self.item.state
        if state is JobState.succeeded and self.result is None:
            return JobState.running
        return state

    def describe(self) -> JobOut:
        req = self.item.request
        return JobOut(id=self.id, status=self.status, task=req.task, seed=req.seed,
                      error=self.error)


class JobStore:
    """id -> Job; all methods run on the event loop."""

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._jobs)

    def add(self, item: WorkItem, owner: Optional[str] = None) -> Job:
        self.purge()
        job = Job(item, owner)
        self._jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._complete(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _complete(self, job: Job) -> None:
        try:
            result = await asyncio.wrap_future(job.item.future)
            job.result = await encoded(result, job.item.request.output_format)
            del result
            job.item.release_result()       # the encoded bytes are what is kept
        except Exception as exc:
            status, code = status_and_code(exc)
            message = str(exc) if isinstance(exc, ServiceError) or status < 500 else \
                "internal error while finishing the job"
            job.error = ErrorDetail(code=code, message=message)
            if job.item.state is JobState.succeeded:      # the encoder failed, not the model
                job.item.state = JobState.failed
        finally:
            job.finished_at = time.monotonic()

    def get(self, job_id: str, owner: Optional[str] = None) -> Job:
        """The job, if ``owner`` created it: another caller's job is as unknown as an
        id that never existed (same 404), so ids cannot be probed."""
        self.purge()
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise JobNotFound(f"no job {job_id[:64]!r} (unknown, or expired after "
                              f"{self.ttl_s:.0f} s)")
        return job

    def result(self, job_id: str, owner: Optional[str] = None) -> tuple[Job, bytes]:
        job = self.get(job_id, owner)
        status = job.status
        if not status.finished:
            raise JobNotFinished(f"job {job.id} is {status.value}; poll GET /v1/jobs/{job.id} "
                                 "until it has succeeded")
        if job.result is None:
            why = f": {job.error.message}" if job.error else ""
            raise JobNotSucceeded(f"job {job.id} {status.value}{why}; it has no result")
        return job, job.result

    def cancel(self, job_id: str, owner: Optional[str] = None) -> Job:
        """Cancel a queued/running job; a finished one is removed (with its result)."""
        job = self.get(job_id, owner)
        if job.status.finished:
            del self._jobs[job.id]
        else:
            job.item.cancel(Canceled("canceled by DELETE /v1/jobs/{id}"))
        return job

    def purge(self) -> int:
        now = time.monotonic()
        stale = [k for k, j in self._jobs.items()
                 if j.finished_at is not None and now - j.finished_at > self.ttl_s]
        for key in stale:
            del self._jobs[key]
        return len(stale)

    async def sweep_forever(self, every_s: float = 60.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.purge()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
