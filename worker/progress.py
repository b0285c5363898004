"""Run status updates, written in batches: one statement per flush, not one round trip per run.

Updates that cannot be written (the database is away) are kept and retried; a worker that dies with updates
unwritten leaves those runs open, and after their lease another worker delivers them again with the same
idempotency key. A FIXED_DELAY schedule parked behind a finished run is re-armed in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from loguru import logger
from psycopg.rows import dict_row

from shared.db.pool import CONNECTION_ERRORS
from shared.db.queries import sql
from shared.model import decode_trigger
from shared.timing.next_fire import next_fire
from worker.fire import Fire, RunUpdate

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
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._pending: dict[str, RunUpdate] = {}
        # Published batches: a few lists per batch instead of a RunUpdate per run, written with half the arrays.
        self._published: list[Published] = []
        self._rearms: dict[str, datetime] = {}  # parked run id -> when it finished
        self._wake = asyncio.Event()
        self.deadline = float("inf")  # time.monotonic() after which a stopping writer gives up

    def record(self, update: RunUpdate) -> None:
        previous = self._pending.get(update.run_id)
        if previous is not None and update.started_at is None:
            update.started_at = previous.started_at
        self._pending[update.run_id] = update  # the latest state of a run is all that needs writing
        if update.rearm and update.finished_at is not None:
            self._rearms[update.run_id] = update.finished_at
        if self.backlog() >= FLUSH_SIZE:
            self._wake.set()

    def record_published(
        self, fires: list[Fire], subjects: list[str], started: datetime, finished: datetime, duration_ms: int
    ) -> None:
        """``fires`` were published (``fire.attempt`` counts this attempt): record them SUCCEEDED."""
        ids = [f.run_id for f in fires]
        for run_id in ids:
            # Their final state: an older update of one of them (none is expected) must not be written after it.
            self._pending.pop(run_id, None)
        self._published.append(
            Published(ids, [f.attempt for f in fires], list(subjects), started, finished, duration_ms)
        )
        for fire in fires:
            if fire.rearm:  # FIXED_DELAY counts from when the run finished, so slow targets never overlap
                self._rearms[fire.run_id] = finished
        if self.backlog() >= FLUSH_SIZE:
            self._wake.set()

    def backlog(self) -> int:
        """Run updates not written yet."""
        return len(self._pending) + sum(len(group.ids) for group in self._published)

    def rearm(self, run_id: str, finished_at: datetime) -> None:
        """Re-arm the FIXED_DELAY schedule parked behind ``run_id`` as if that run finished at ``finished_at``."""
        self._rearms[run_id] = finished_at

    async def begin_attempt(self, run_id: str) -> bool:
        """Before a retry: whether the run is still open (not cancelled meanwhile), and from now on not
        cancellable until this attempt is recorded. The run's own pending update (its RETRYING state) is written
        first, in the same transaction, so that state cannot land afterwards and make the run look cancellable
        mid-attempt. When the database is away the attempt goes ahead: delivering at least once matters more
        than honouring a cancel that could not have been recorded either."""
        pending = self._pending.get(run_id)
        try:
            async with self.pool.connection() as conn, conn.transaction():
                if pending is not None:
                    await conn.execute(sql("run_update_many"), _columns([pending]))
                cur = await conn.execute(sql("run_attempt_begin"), {"id": run_id})
                still_open = await cur.fetchone() is not None
        except CONNECTION_ERRORS as exc:
            logger.warning("cannot check run {} before retrying it ({}); retrying anyway", run_id, exc)
            return True
        if pending is not None and self._pending.get(run_id) is pending:
            del self._pending[run_id]
        return still_open

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
            except CONNECTION_ERRORS as exc:
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
        rearms = dict(self._rearms)
        try:
            await self._write(batch, published, rearms)
        except CONNECTION_ERRORS:
            raise
        except psycopg.Error as exc:
            # A value Postgres refuses (it should have been cleaned before) must not block every other update:
            # write one by one and drop what still fails.
            logger.error("batch of {} run update(s) refused ({}); writing them one by one", len(batch), exc)
            for update in batch:
                try:
                    await self._write([update], [], {})
                except CONNECTION_ERRORS:
                    raise
                except psycopg.Error as one:
                    logger.error("dropping the update of run {}: {}", update.run_id, one)
            for group in published:
                try:
                    await self._write([], [group], {})
                except CONNECTION_ERRORS:
                    raise
                except psycopg.Error as one:
                    logger.error("dropping the update of published runs {}: {}", group.ids[:5], one)
            await self._write([], [], rearms)
        for update in batch:
            if self._pending.get(update.run_id) is update:
                del self._pending[update.run_id]
        written = {id(group) for group in published}  # by identity: a concurrent flush (shutdown) may run
        self._published = [group for group in self._published if id(group) not in written]
        for run_id, finished in rearms.items():
            if self._rearms.get(run_id) == finished:
                del self._rearms[run_id]
        return len(batch) + sum(len(group.ids) for group in published)

    async def _write(self, batch: list[RunUpdate], published: list[Published], rearms: dict[str, datetime]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            if batch:
                await conn.execute(sql("run_update_many"), _columns(batch))
            if published:
                # One statement for every batch published since the last flush (under a steady load there are
                # many small ones: a statement each would cost more than their rows).
                await conn.execute(sql("run_published_many"), _published_columns(published))
            if rearms:
                await self._rearm(conn, rearms)

    async def _rearm(self, conn: psycopg.AsyncConnection[Any], rearms: dict[str, datetime]) -> None:
        """FIXED_DELAY counts from when the run finished; the trigger is read now, so an edit made while the
        run was in flight (a new delaySec) applies."""
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql("schedule_get_parked_many"), {"run_ids": list(rearms)})
        ids, next_runs = [], []
        for row in await cur.fetchall():
            ids.append(row["id"])
            next_runs.append(next_fire(decode_trigger(row["trigger"]), row["tz"], rearms[str(row["parked_run_id"])]))
        if ids:
            await conn.execute(sql("schedule_rearm_many"), {"ids": ids, "next_run_at": next_runs})


def _published_columns(published: list[Published]) -> dict[str, Any]:
    return {
        "ids": [run_id for group in published for run_id in group.ids],
        "attempt": [attempt for group in published for attempt in group.attempts],
        "subject": [subject for group in published for subject in group.subjects],
        "started_at": [t for group in published for t in [group.started_at] * len(group.ids)],
        "finished_at": [t for group in published for t in [group.finished_at] * len(group.ids)],
        "duration_ms": [ms for group in published for ms in [group.duration_ms] * len(group.ids)],
    }


def _columns(batch: list[RunUpdate]) -> dict[str, Any]:
    return {
        "ids": [u.run_id for u in batch],
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
