"""Run status updates, written in batches: one statement per flush, not one round trip per run.

Updates that cannot be written (the database is away) are kept and retried; a worker that dies with updates
unwritten leaves those runs open, and after their lease another worker delivers them again with the same
idempotency key. A FIXED_DELAY schedule parked behind a finished run is re-armed in the same transaction
(``parking.py``). Writes go through the worker's store and are fenced: an outcome of a run another worker took
over is not written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from loguru import logger

from shared.db.run_ids import id_span
from shared.errors import SchedulerError, Unavailable
from worker.fire import Delivered, Fire, RunUpdate
from worker.parking import Rearms, rearm_at
from worker.store import WorkerStore

FLUSH_INTERVAL_SEC = 0.05
FLUSH_SIZE = 500


@dataclass(frozen=True, slots=True)
class Published:
    """Runs published together as core NATS events, all SUCCEEDED with one start, finish and duration."""

    ids: list[str]
    attempts: list[int]
    subjects: list[str]
    started_at: datetime
    finished_at: datetime
    duration_ms: int


class ProgressWriter:
    def __init__(self, store: WorkerStore) -> None:
        self.store = store
        self._pending: dict[str, RunUpdate] = {}
        # Published batches: a few lists per batch instead of a RunUpdate per run, written with half the arrays.
        self._published: list[Published] = []
        self._rearms = Rearms()
        self._wake = asyncio.Event()
        self._committed: dict[str, list[asyncio.Future[None]]] = {}  # run id -> waiting for its write
        self.deadline = float("inf")  # time.monotonic() after which a stopping writer gives up

    def record(self, update: RunUpdate) -> None:
        previous = self._pending.get(update.run_id)
        if previous is not None and update.started_at is None:
            update.started_at = previous.started_at
        self._pending[update.run_id] = update  # the latest state of a run is all that needs writing
        if update.rearm and update.finished_at is not None:
            self._rearms.add(update.run_id, update.finished_at)
        if self.backlog() >= FLUSH_SIZE:
            self._wake.set()

    def succeeded(
        self,
        fires: list[Fire],
        started: datetime,
        finished: datetime,
        duration_ms: int,
        result: Delivered | None,
        subjects: list[str] | None,
    ) -> None:
        """``fires`` were delivered (``fire.attempt`` counts this attempt): record them SUCCEEDED. A core NATS
        batch (``subjects``) is kept as a few lists, written with half the arrays; any other run as its update."""
        if subjects is None:
            for fire in fires:
                update = RunUpdate(
                    run_id=fire.run_id,
                    status="SUCCEEDED",
                    attempt=fire.attempt,
                    started_at=started,
                    finished_at=finished,
                    duration_ms=duration_ms,
                    http_status=result.http_status if result else None,
                    delivery=msgspec.json.encode(result.detail).decode() if result else None,
                    rearm=fire.rearm,
                )
                self.record(update)
            return
        ids = [f.run_id for f in fires]
        for run_id in ids:
            # Their final state: an older update of one of them (none is expected) must not be written after it.
            self._pending.pop(run_id, None)
        attempts = [f.attempt for f in fires]
        self._published.append(Published(ids, attempts, list(subjects), started, finished, duration_ms))
        for fire in fires:
            if fire.rearm:
                self._rearms.add(fire.run_id, finished)
        if self.backlog() >= FLUSH_SIZE:
            self._wake.set()

    async def committed(self, run_id: str) -> None:
        """Return once what was recorded for ``run_id`` so far is committed (or dropped as unwritable)."""
        if run_id not in self._pending:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._committed.setdefault(run_id, []).append(waiter)
        self._wake.set()  # a notice is waiting on this write: do not let it sit out the flush interval
        await waiter

    def _release_waiters(self, batch: list[RunUpdate]) -> None:
        for update in batch:
            if self._pending.get(update.run_id) is None:
                for waiter in self._committed.pop(update.run_id, ()):
                    if not waiter.done():
                        waiter.set_result(None)

    def backlog(self) -> int:
        """Run updates not written yet."""
        return len(self._pending) + sum(len(group.ids) for group in self._published)

    def rearm(self, run_id: str, finished_at: datetime) -> None:
        """Re-arm the FIXED_DELAY schedule parked behind ``run_id`` as if that run finished at ``finished_at``."""
        self._rearms.add(run_id, finished_at)

    async def begin_attempt(self, run_id: str) -> bool:
        """Before a retry: whether the run is still open (not cancelled meanwhile), and from now on not
        cancellable until this attempt is recorded. The run's own pending update (its RETRYING state) is written
        first, in the same transaction, so that state cannot land afterwards and make the run look cancellable
        mid-attempt. When the database is away the attempt goes ahead: delivering at least once matters more
        than honouring a cancel that could not have been recorded either."""
        pending = self._pending.get(run_id)
        try:
            still_open = await self.store.begin_attempt(run_id, _columns([pending]) if pending is not None else None)
        except Unavailable as exc:
            logger.warning("cannot check run {} before retrying it ({}); retrying anyway", run_id, exc)
            return True
        if pending is not None and self._pending.get(run_id) is pending:
            del self._pending[run_id]
        return still_open

    async def write_now(self, update: RunUpdate) -> str | None:
        """Write ``update`` now rather than with the next flush (its own pending update goes with it). None if
        it was written, else the run's status (it was cancelled meanwhile, or another worker holds it)."""
        self._pending.pop(update.run_id, None)
        return await self.store.write_now(_columns([update]))

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until ``stop`` is set and nothing is left (or, once stopping, until ``self.deadline``)."""
        failures = 0
        while not (stop.is_set() and not self._pending and not self._published and not self._rearms):
            if stop.is_set() and time.monotonic() > self.deadline:
                logger.error(
                    "shutdown deadline: {} run update(s) not written; those runs will be redelivered",
                    self.backlog(),
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_SEC)
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except Unavailable as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                logger.warning(
                    "cannot record run progress ({} pending): {}; retrying in {:.1f}s",
                    self.backlog(),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def flush(self) -> int:
        if not self._pending and not self._published and not self._rearms:
            return 0
        batch = list(self._pending.values())
        published = list(self._published)
        rearms = self._rearms.snapshot()
        try:
            await self._write(batch, published, rearms)
        except Unavailable:
            raise
        except SchedulerError as exc:
            # A value Postgres refuses (it should have been cleaned before) must not block every other update:
            # write one by one and drop what still fails.
            logger.error("batch of {} run update(s) refused ({}); writing them one by one", len(batch), exc)
            for update in batch:
                try:
                    await self._write([update], [], {})
                except Unavailable:
                    raise
                except SchedulerError as one:
                    logger.error("dropping the update of run {}: {}", update.run_id, one)
            for group in published:
                try:
                    await self._write([], [group], {})
                except Unavailable:
                    raise
                except SchedulerError as one:
                    logger.error("dropping the update of published runs {}: {}", group.ids[:5], one)
            await self._write([], [], rearms)
        for update in batch:
            if self._pending.get(update.run_id) is update:
                del self._pending[update.run_id]
        self._release_waiters(batch)
        written = {id(group) for group in published}  # by identity: a concurrent flush (shutdown) may run
        self._published = [group for group in self._published if id(group) not in written]
        self._rearms.written(rearms)
        return len(batch) + sum(len(group.ids) for group in published)

    async def _write(self, batch: list[RunUpdate], published: list[Published], rearms: dict[str, datetime]) -> None:
        # One statement for every batch published since the last flush (under a steady load there are many
        # small ones: a statement each would cost more than their rows).
        await self.store.write_progress(
            _columns(batch) if batch else None,
            _published_columns(published) if published else None,
            rearms,
            rearm_at,
        )


def _published_columns(published: list[Published]) -> dict[str, Any]:
    ids = [run_id for group in published for run_id in group.ids]
    return {
        **id_span(ids),
        "ids": ids,
        "attempt": [attempt for group in published for attempt in group.attempts],
        "subject": [subject for group in published for subject in group.subjects],
        "started_at": [t for group in published for t in [group.started_at] * len(group.ids)],
        "finished_at": [t for group in published for t in [group.finished_at] * len(group.ids)],
        "duration_ms": [ms for group in published for ms in [group.duration_ms] * len(group.ids)],
    }


def _columns(batch: list[RunUpdate]) -> dict[str, Any]:
    ids = [u.run_id for u in batch]
    return {
        **id_span(ids),
        "ids": ids,
        "status": [u.status for u in batch],
        "attempt": [u.attempt for u in batch],
        "started_at": [u.started_at for u in batch],
        "finished_at": [u.finished_at for u in batch],
        "next_attempt_at": [u.next_attempt_at for u in batch],
        "lease_until": [u.lease_until for u in batch],
        "duration_ms": [u.duration_ms for u in batch],
        "http_status": [u.http_status for u in batch],
        "error": [u.error for u in batch],
        "delivery": [u.delivery for u in batch],
    }
