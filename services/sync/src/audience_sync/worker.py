"""The work loop: claims queued runs, imports and exports from the store and carries them out.

The store, not Kafka, holds long work: a command only wakes a worker. Each record is claimed
with a lease that checkpoints and a heartbeat renew; when a process dies its lease lapses and
another worker (or the restarted one) resumes the record from its last checkpoint.
"""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from audience_sync.adapters.mongo import LeaseLost
from audience_sync.errors import JobFailed, SourceRejected, is_transient
from audience_sync.metrics import JOBS, JOBS_RUNNING
from audience_sync.ports import Document, JobHandle, JobStore

log = structlog.get_logger()

JobAction = Callable[[JobHandle], Coroutine[Any, Any, None]]
AfterJob = Callable[[Document, bool], Awaitable[None]]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class ClaimedJob:
    """A record this worker holds; every write is guarded by the lease owner."""

    def __init__(
        self, kind: str, record: Document, jobs: JobStore, owner: str, lease_s: float, clock: Clock
    ) -> None:
        self.kind = kind
        self.record = record
        self._jobs = jobs
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        # The heartbeat and the work both write this record. FerretDB rewrites the whole
        # document on every update, so two overlapping updates could lose one's fields (a
        # checkpoint undone by a renewal): one write at a time per record.
        self._writes = asyncio.Lock()

    async def checkpoint(self, checkpoint: Document, progress: Document) -> None:
        await self.update({"checkpoint": checkpoint, **progress})

    async def update(self, fields: Document) -> None:
        now = self._clock()
        fields = {
            **fields,
            "lease_until": now + timedelta(seconds=self._lease_s),
            "updated_at": now,
        }
        async with self._writes:
            await self._jobs.update_owned(self.kind, self.record["_id"], self._owner, fields)
        self.record.update(fields)

    async def renew(self) -> None:
        await self.update({})

    async def resumed(self) -> None:
        now = self._clock()
        # Renew the lease too: between attempts nothing else does, and a lease that lapses
        # while we back off hands the record to a second worker.
        renewal = {"lease_until": now + timedelta(seconds=self._lease_s), "updated_at": now}
        async with self._writes:
            await self._jobs.update_owned(
                self.kind, self.record["_id"], self._owner, renewal, inc={"resumes": 1}
            )
        fresh = await self._jobs.get(self.kind, self.record["_id"])
        if fresh is None or fresh.get("owner") != self._owner:
            raise LeaseLost(self.record["_id"])
        self.record = fresh


class JobWorker:
    def __init__(
        self,
        jobs: JobStore,
        actions: dict[str, JobAction],
        after: dict[str, AfterJob],
        owner: str,
        lease_s: float,
        poll_s: float,
        retry_s: float,
        max_backoff_s: float,
        clock: Clock = utcnow,
    ) -> None:
        self._jobs = jobs
        self._actions = actions
        self._after = after
        self._owner = owner
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._retry_s = retry_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except Exception as exc:
                log.warning("worker.claim_failed", error=repr(exc), transient=is_transient(exc))
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
                self._wake.clear()

    async def run_once(self) -> bool:
        """Claim and carry out one record of any kind; False when there was nothing to do."""
        kinds = list(self._actions)
        random.shuffle(kinds)  # no kind starves another
        for kind in kinds:
            record = await self._jobs.claim_next(kind, self._owner, self._clock(), self._lease_s)
            if record is not None:
                job = ClaimedJob(kind, record, self._jobs, self._owner, self._lease_s, self._clock)
                await self.execute(job)
                return True
        return False

    async def execute(self, job: ClaimedJob) -> None:
        structlog.contextvars.bind_contextvars(job_kind=job.kind, job_id=job.record["_id"])
        JOBS_RUNNING.inc()
        started = time.monotonic()
        try:
            outcome = await self._attempts(job)
        finally:
            JOBS_RUNNING.dec()
            structlog.contextvars.unbind_contextvars("job_kind", "job_id")
        if outcome is None:
            return
        ok, error = outcome
        now = self._clock()
        fields: Document = {"status": "completed" if ok else "failed", "finished_at": now}
        if error is not None:
            fields["error"] = error
        try:
            await job.update({**fields, "lease_until": None})
        except LeaseLost:
            return
        JOBS.labels(kind=job.kind, status=fields["status"]).inc()
        log.info(
            "job.finished",
            kind=job.kind,
            job_id=job.record["_id"],
            status=fields["status"],
            seconds=round(time.monotonic() - started, 3),
        )
        if (after := self._after.get(job.kind)) is not None:
            await after(job.record, ok)

    async def _attempts(self, job: ClaimedJob) -> tuple[bool, Document | None] | None:
        """Run until done, resuming from the checkpoint after transient failures."""
        deadline = time.monotonic() + self._retry_s
        attempt = 0
        while True:
            try:
                await self._with_heartbeat(job)
                return True, None
            except LeaseLost:
                log.warning("job.lease_lost")
                return None
            except (JobFailed, SourceRejected) as exc:
                log.warning("job.failed", code=exc.code, error=exc.message)
                return False, {"code": exc.code, "message": exc.message}
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > deadline:
                    log.exception("job.failed", error=repr(exc))
                    code = "source_unavailable" if is_transient(exc) else "internal_error"
                    return False, {"code": code, "message": str(exc)[:500] or repr(exc)}
                attempt += 1
                wait_s = random.uniform(0, min(self._max_backoff_s, 0.5 * 2**attempt))
                log.warning(
                    "job.resuming", attempt=attempt, wait_s=round(wait_s, 2), error=str(exc)
                )
                await asyncio.sleep(wait_s)
                try:
                    await job.resumed()
                except LeaseLost:
                    log.warning("job.lease_lost")
                    return None
                except Exception as resume_exc:
                    # The store is down too: the next attempt meets it and backs off again.
                    log.warning("job.resume_not_recorded", error=repr(resume_exc))

    async def _with_heartbeat(self, job: ClaimedJob) -> None:
        work: asyncio.Task[None] = asyncio.create_task(self._actions[job.kind](job))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self._lease_s / 3)
                if done:
                    work.result()
                    return
                try:
                    await job.renew()
                except LeaseLost:
                    raise
                except Exception as exc:
                    # The work itself will meet the same outage and retry; keep beating.
                    log.warning("job.heartbeat_failed", error=repr(exc))
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
