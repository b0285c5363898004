"""Run status updates, written in batches: one statement per flush, not one round trip per run.

Updates that cannot be written (the database is away) are kept and retried; a worker that dies with updates
unwritten leaves those runs open, and after their lease another worker delivers them again with the same
idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import psycopg_pool
from loguru import logger

from shared.db.queries import sql
from worker.fire import RunUpdate

FLUSH_INTERVAL_SEC = 0.05
FLUSH_SIZE = 500


class ProgressWriter:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.pool = pool
        self._pending: dict[str, RunUpdate] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def record(self, update: RunUpdate) -> None:
        previous = self._pending.get(update.run_id)
        if previous is not None and update.started_at is None:
            update.started_at = previous.started_at
        self._pending[update.run_id] = update  # the latest state of a run is all that needs writing
        self._idle.clear()
        if len(self._pending) >= FLUSH_SIZE:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not (stop.is_set() and not self._pending):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_SEC)
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                logger.warning(
                    "cannot record run progress ({} pending): {}; retrying in {:.1f}s", len(self._pending), exc, delay
                )
                if stop.is_set() and failures > 5:
                    logger.error(
                        "giving up on {} run updates at shutdown: their runs will be redelivered", len(self._pending)
                    )
                    return
                await asyncio.sleep(delay)

    async def flush(self) -> int:
        if not self._pending:
            self._idle.set()
            return 0
        batch = list(self._pending.values())
        params = _columns(batch)
        rearms = [u for u in batch if u.rearm]
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await conn.execute(sql("run_update_many"), params)
            if rearms:
                await conn.execute(
                    sql("schedule_rearm_many"),
                    {"run_ids": [u.run_id for u in rearms], "next_run_at": [u.rearm_next_run_at for u in rearms]},
                )
        for update in batch:
            if self._pending.get(update.run_id) is update:
                del self._pending[update.run_id]
        if not self._pending:
            self._idle.set()
        return len(batch)

    async def drained(self) -> None:
        await self._idle.wait()


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
