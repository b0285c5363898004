"""The worker's store: the only worker code that runs SQL, and its one error translation point.

As the API has ``shared/db/repository.py``, the worker has this: every statement is a named one from
``shared/db/queries.sql``; psycopg errors leave it as ``Unavailable`` (the database is unreachable: back off and
retry) or ``SchedulerError`` (the database refused a statement: a bug or a value it cannot store).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from shared.db.pool import CONNECTION_ERRORS
from shared.db.queries import sql
from shared.db.run_ids import id_span
from shared.errors import SchedulerError, Unavailable

# What a claim's planner returns: the runs to record (first), and the statement's parameters.
Plan = Callable[[list[tuple[Any, ...]]], tuple[list[Any], dict[str, Any]]]


@contextlib.asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"the database is unavailable: {exc}") from exc
    except psycopg.Error as exc:
        raise SchedulerError(f"the database refused a worker statement: {exc}") from exc


class WorkerStore:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, postgres_url: str, worker_id: str) -> None:
        self.pool = pool
        self.postgres_url = postgres_url
        self.worker_id = worker_id

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with translated_errors(), self.pool.connection() as conn:
            yield conn

    # --- the claim --------------------------------------------------------------------------------------

    async def claim(
        self, now: datetime, limit: int, fresh: int, throttled: list[str], plan: Plan
    ) -> tuple[list[Any], list[Any], int]:
        """Claim up to ``limit`` due schedules, let ``plan`` decide their runs and new next_run_at, and commit
        the runs (the outbox) with the advance, in one transaction. Returns the runs recorded, the planned runs
        that were already recorded (not ours to deliver), and how many schedules were advanced."""
        async with self._conn() as conn:
            # One transaction in two round trips: the claim, then advance + record + commit. In pipeline mode the
            # statements up to the next Sync form one implicit transaction: fetching the claimed rows only asks
            # for a flush (the row locks stay held), and leaving the pipeline sends the Sync, which commits it, or
            # rolls it back if a statement failed. All writes are ONE statement, so whatever happens in between
            # (an exception, a cancellation) nothing can commit half of them. (psycopg's transaction() in
            # pipeline mode syncs after BEGIN, before and after COMMIT and on leaving: five round trips.) If this
            # process freezes in between, the server's transaction_timeout ends the transaction and its locks.
            await conn.set_autocommit(True)
            try:
                async with conn.pipeline():
                    # fresh > 0: the fair claim (a share of the batch for recently due rows, across tenants).
                    statement = sql("schedule_claim_due_fair") if fresh else sql("schedule_claim_due")
                    cur = await conn.execute(
                        statement, {"now": now, "limit": limit, "fresh": fresh, "throttled": throttled}
                    )
                    rows = await cur.fetchall()
                    if not rows:
                        return [], [], 0
                    fires, params = plan(rows)
                    await cur.execute(sql("schedule_advance_and_record"), params | {"worker": self.worker_id})
            finally:
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    await conn.set_autocommit(False)  # as the pool's other users expect it
                else:  # broken, or interrupted before the Sync came back: the pool replaces a closed connection
                    await conn.close()
            if cur.rowcount == len(fires):
                return fires, [], len(params["ids"])
            recorded = {r[0] for r in await cur.fetchall()}
            return (
                [f for f in fires if f.run_id in recorded],
                [f for f in fires if f.run_id not in recorded],
                len(params["ids"]),
            )

    async def next_due(self) -> datetime | None:
        async with self._conn() as conn:
            cur = await conn.execute(sql("schedule_next_due"))
            row = await cur.fetchone()
        return row[0] if row else None

    # --- leases -----------------------------------------------------------------------------------------

    async def rescue(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """Take over up to ``limit`` open runs whose lease ended; returns them and their schedules by id."""
        async with self._conn() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                sql("run_lease_expired"),
                {"now": now, "limit": limit, "lease_until": lease_until, "worker": self.worker_id},
            )
            runs = await cur.fetchall()
            if not runs:
                return [], {}
            await cur.execute(sql("schedule_targets_many"), {"ids": list({r["schedule_id"] for r in runs})})
            schedules = {str(s["id"]): s for s in await cur.fetchall()}
        return runs, schedules

    async def extend_leases(self, run_ids: list[str], until: datetime) -> set[str]:
        """Fencing and heartbeat in one statement: extend this worker's leases of ``run_ids`` to ``until``; the
        ids returned are the runs it still holds (any other was taken over, or finished by another worker)."""
        async with self._conn() as conn:
            cur = await conn.execute(
                sql("run_lease_extend_many"), {"ids": run_ids, "until": until, "worker": self.worker_id}
            )
            held = {r[0] for r in await cur.fetchall()}
            await conn.commit()
        return held

    async def release(self, run_ids: list[str], now: datetime) -> None:
        async with self._conn() as conn:
            params = {"ids": run_ids, "now": now, "worker": self.worker_id, **id_span(run_ids)}
            await conn.execute(sql("run_release_many"), params)
            await conn.commit()

    # --- progress ---------------------------------------------------------------------------------------

    async def write_progress(
        self,
        updates: dict[str, Any] | None,
        published: dict[str, Any] | None,
        rearms: dict[str, datetime],
        rearm_at: Callable[[str, str, datetime], datetime | None],
    ) -> None:
        """Record run outcomes (fenced: only runs this worker still holds) and re-arm the FIXED_DELAY schedules
        parked behind finished runs (``rearm_at(trigger, tz, finished)``), in one transaction."""
        async with self._conn() as conn, conn.transaction():
            if updates:
                await conn.execute(sql("run_update_many"), updates | {"worker": self.worker_id})
            if published:
                await conn.execute(sql("run_published_many"), published | {"worker": self.worker_id})
            if rearms:
                cur = conn.cursor(row_factory=dict_row)
                run_ids = list(rearms)
                await cur.execute(sql("schedule_get_parked_many"), {"run_ids": run_ids, **id_span(run_ids)})
                ids, next_runs, parked = [], [], set()
                for row in await cur.fetchall():
                    ids.append(row["id"])
                    parked.add(str(row["parked_run_id"]))
                    next_runs.append(rearm_at(row["trigger"], row["tz"], rearms[str(row["parked_run_id"])]))
                if ids:
                    await conn.execute(sql("schedule_rearm_many"), {"ids": ids, "next_run_at": next_runs})
                # The other runs' end releases the schedules whose overlap policy waits for them (a run that
                # parks a FIXED_DELAY schedule holds none: FIXED_DELAY takes no overlap policy).
                others = [run_id for run_id in run_ids if run_id not in parked]
                if others:
                    await self._release_overlap(conn, others, min(rearms.values()), acked=False)

    async def release_overlap(self, run_ids: list[str], now: datetime, *, acked: bool) -> None:
        """Release the schedules waiting for these runs (``acked``: even a QUEUE run that SUCCEEDED)."""
        async with self._conn() as conn, conn.transaction():
            await self._release_overlap(conn, run_ids, now, acked=acked)

    @staticmethod
    async def _release_overlap(
        conn: psycopg.AsyncConnection[Any], run_ids: list[str], now: datetime, *, acked: bool
    ) -> None:
        cur = await conn.execute(sql("schedule_overlap_release_many"), {"run_ids": run_ids, "acked": acked})
        promoted = [(row[0], row[1]) for row in await cur.fetchall() if row[0] is not None]
        await WorkerStore._hand_over(conn, promoted, now)

    @staticmethod
    async def _hand_over(conn: psycopg.AsyncConnection[Any], runs: list[tuple[str, datetime]], now: datetime) -> None:
        """Hand waiting (buffered) runs to the workers: their lease ends now, and idle workers are woken to
        deliver them at once, not at their next rescue."""
        if not runs:
            return
        params = {"ids": [r[0] for r in runs], "at": [r[1] for r in runs], "now": now}
        cur = await conn.execute(sql("run_release_waiting"), params)
        if cur.rowcount:
            await conn.execute(sql("schedule_notify"), {"reason": "overlap"})

    async def settle_overlap(
        self, cancel: list[tuple[str, datetime, str]], release: list[tuple[str, datetime]], now: datetime
    ) -> list[tuple[str, datetime, str, str, int, str]]:
        """After a claim: cancel the runs CANCEL_OTHER superseded that are still open, hand over buffered runs
        left waiting. Returns the superseded runs that had already published into a work queue, to withdraw:
        (id, scheduled_for, why, stream, seq, idempotency key)."""
        published: list[tuple[str, datetime, str, str, int, str]] = []
        async with self._conn() as conn, conn.transaction():
            if cancel:
                why = {c[0]: c[2] for c in cancel}
                params = {"ids": [c[0] for c in cancel], "at": [c[1] for c in cancel], "now": now}
                cur = await conn.execute(sql("run_cancel_superseded"), params | {"errors": [c[2] for c in cancel]})
                cancelled = {r[0] for r in await cur.fetchall()}
                rest = [c for c in cancel if c[0] not in cancelled]
                if rest:
                    params = {"ids": [c[0] for c in rest], "at": [c[1] for c in rest]}
                    cur = await conn.execute(sql("run_queue_published_many"), params)
                    published = [(r[0], r[1], why[r[0]], r[2], r[3], r[4]) for r in await cur.fetchall()]
            await self._hand_over(conn, release, now)
        return published

    async def withdrawn(self, run_id: str, at: datetime, error: str, delivery: str | None = None) -> None:
        """A run's message was deleted from its work queue unconsumed (CANCEL_OTHER): the run is CANCELLED, its
        delivery (``delivery``: the publish's, when the run never recorded it) marked withdrawn."""
        async with self._conn() as conn:
            params = {"id": run_id, "at": at, "error": error, "delivery": delivery}
            await conn.execute(sql("run_withdrawn"), params)
            await conn.commit()

    async def queue_holds(self, limit: int, after: str | None) -> list[tuple[str, str, str | None, int | None, str]]:
        """Runs published into a work queue that still hold their schedule, after schedule id ``after`` in
        schedule id order: (schedule id, run id, stream, seq, idempotency key)."""
        async with self._conn() as conn:
            cur = await conn.execute(sql("schedule_overlap_queue_held"), {"limit": limit, "after": after})
            rows = await cur.fetchall()
            await conn.commit()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def write_now(self, update: dict[str, Any]) -> str | None:
        """Write one run's update at once (fenced like every progress write). None if it was written, else the
        run's status: it is no longer open (cancelled meanwhile) or no longer this worker's."""
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(sql("run_update_many"), update | {"worker": self.worker_id})
            if cur.rowcount == 1:
                return None
            cur = await conn.execute(sql("run_status"), {"id": update["ids"][0], **id_span(update["ids"])})
            row = await cur.fetchone()
            return str(row[0]) if row else "MISSING"

    async def begin_attempt(self, run_id: str, pending: dict[str, Any] | None) -> bool:
        """Write ``pending`` (the run's own update not flushed yet), then mark the run's retry as under way; False
        if it is no longer open (cancelled meanwhile). One transaction: the row lock orders it against a cancel."""
        async with self._conn() as conn, conn.transaction():
            if pending is not None:
                await conn.execute(sql("run_update_many"), pending | {"worker": self.worker_id})
            cur = await conn.execute(sql("run_attempt_begin"), {"id": run_id, **id_span([run_id])})
            return await cur.fetchone() is not None

    # --- lifecycle events (worker/events.py) -----------------------------------------------------------

    async def relay_events(
        self, limit: int, publish: Callable[[list[dict[str, Any]]], Awaitable[list[int]]], held: list[int]
    ) -> int:
        """Lock the outbox (one relay at a time), take its oldest ``limit`` events but the ``held`` ones,
        ``publish`` them and delete those it returns (by seq, acknowledged), in one transaction. Returns how many
        were deleted."""
        async with self._conn() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(sql("schedule_event_lock_relay"))
            locked = await cur.fetchone()
            if not locked or not locked["locked"]:
                return 0
            await cur.execute(sql("schedule_event_claim"), {"limit": limit, "held": held})
            rows = await cur.fetchall()
            if not rows:
                return 0
            acked = await publish(rows)
            if acked:
                await cur.execute(sql("schedule_event_delete_many"), {"seqs": acked})
        return len(acked)

    async def delete_completed(self, limit: int) -> int:
        """actionAfterCompletion DELETE: remove up to ``limit`` completed schedules whose runs all finished."""
        async with self._conn() as conn:
            cur = await conn.execute(sql("schedule_delete_completed"), {"limit": limit})
            row = await cur.fetchone()
            await conn.commit()
        return int(row[0]) if row else 0

    # --- the fleet --------------------------------------------------------------------------------------

    async def beat(
        self, started_at: datetime, now: datetime, forget_before: datetime
    ) -> list[tuple[datetime, datetime]]:
        """This worker is alive at ``now``; returns every known worker's [started_at, beat_at] (the fleet's
        uptime) and forgets processes silent since ``forget_before``."""
        async with self._conn() as conn:
            cur = await conn.execute(
                sql("fleet_heartbeat_beat"),
                {"worker": self.worker_id, "started_at": started_at, "now": now, "forget_before": forget_before},
            )
            rows = await cur.fetchall()
            await conn.commit()
        return [(r[0], r[1]) for r in rows]

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.execute(sql("database_ping"))

    async def notifications(self) -> AsyncIterator[str]:
        """Wake-up NOTIFY payloads, on a connection of its own (LISTEN needs one outside the pool)."""
        async with (
            translated_errors(),
            await psycopg.AsyncConnection.connect(self.postgres_url, autocommit=True) as conn,
        ):
            await conn.execute(sql("worker_listen"))
            async for notify in conn.notifies():
                yield notify.payload
