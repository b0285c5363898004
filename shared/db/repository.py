"""The only code that runs SQL at runtime: named statements from queries.sql, psycopg errors translated here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from shared.db.pool import CONNECTION_ERRORS
from shared.db.queries import sql
from shared.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, Unavailable
from shared.model import (
    ActionAfterCompletion,
    MisfirePolicy,
    Notify,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    decode_retry,
    decode_target,
    decode_trigger,
)
from shared.timing.jitter import due_at

_labels = msgspec.json.Decoder(dict[str, str])
_any = msgspec.json.Decoder()
_encode = msgspec.json.encode

# Who acts in this request (the token's ``sub``), set by the API's authentication: every tenant-scoped
# transaction names it, so the lifecycle events' outbox trigger (sql/0070) records the actor of each change.
current_actor: ContextVar[str] = ContextVar("current_actor", default="")


@dataclass(frozen=True, slots=True)
class ListFilter:
    enabled: bool | None = None
    name_prefix: str | None = None
    labels: dict[str, str] | None = None


def schedule_params(s: Schedule) -> dict[str, Any]:
    """The statement parameters that store ``s`` (JSON columns encoded by msgspec)."""
    return {
        "id": s.id,
        "tenant_id": s.tenant_id,
        "name": s.name,
        "description": s.description,
        "tz": s.tz,
        "trigger": _encode(s.trigger).decode(),
        "target": _encode(s.target).decode(),
        "payload": _encode(s.payload).decode(),
        "enabled": s.enabled,
        "misfire_policy": s.misfire_policy.value,
        "catch_up_limit": s.catch_up_limit,
        "retry": _encode(s.retry).decode(),
        "labels": _encode(s.labels).decode(),
        # The column is when the occurrence is due (fired); the nominal one is kept beside it when they differ.
        "next_run_at": due_at(s.id, s.next_run_at, s.jitter_sec),
        "next_nominal_at": s.next_run_at if s.jitter_sec else None,
        "jitter_sec": s.jitter_sec,
        "action_after_completion": s.action_after_completion.value,
        "pause_on_failure": s.pause_on_failure,
        "notify_run_succeeded": s.notify.run_succeeded,
    }


def schedule_from_row(row: dict[str, Any]) -> Schedule:
    due = row["next_run_at"]
    nominal = row.get("next_nominal_at")
    next_run_at = due if nominal is None or due is None else nominal
    if not row["enabled"]:
        status = ScheduleStatus.PAUSED
    elif next_run_at is None and row["parked_run_id"] is None:
        status = ScheduleStatus.COMPLETED
    else:
        status = ScheduleStatus.ACTIVE
    return Schedule(
        id=str(row["id"]),
        tenant_id=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        tz=row["tz"],
        trigger=decode_trigger(row["trigger"]),
        target=decode_target(row["target"]),
        payload=_any.decode(row["payload"]),
        enabled=row["enabled"],
        misfire_policy=MisfirePolicy(row["misfire_policy"]),
        catch_up_limit=row["catch_up_limit"],
        retry=decode_retry(row["retry"]),
        labels=_labels.decode(row["labels"]),
        status=status,
        next_run_at=next_run_at,
        last_run_at=row["last_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        paused_reason=row.get("paused_reason"),
        paused_at=row.get("paused_at"),
        paused_by=row.get("paused_by"),
        pause_on_failure=row.get("pause_on_failure"),
        notify=Notify(run_succeeded=row.get("notify_run_succeeded", False)),
        jitter_sec=row.get("jitter_sec"),
        action_after_completion=ActionAfterCompletion(row.get("action_after_completion") or "KEEP"),
        next_due_at=due,
    )


def run_from_row(row: dict[str, Any]) -> Run:
    return Run(
        id=str(row["id"]),
        schedule_id=str(row["schedule_id"]),
        tenant_id=row["tenant_id"],
        scheduled_for=row["scheduled_for"],
        manual=row["manual"],
        idempotency_key=row["idempotency_key"],
        status=RunStatus(row["status"]),
        attempt=row["attempt"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        next_attempt_at=row["next_attempt_at"],
        duration_ms=row["duration_ms"],
        http_status=row["http_status"],
        error=row["error"],
        delivery=_any.decode(row["delivery"]) if row["delivery"] is not None else None,
    )


@asynccontextmanager
async def translated_errors(name: Callable[[], str | None] = lambda: None) -> AsyncIterator[None]:
    """The one boundary where psycopg errors become application errors (``name``: of the schedule being stored,
    known to an update only once its change was applied)."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        if constraint == "schedules_tenant_name_key":
            raise Conflict(f"a schedule named {name()!r} already exists", field="name") from exc
        raise Conflict(f"conflicts with an existing row ({constraint})") from exc
    except CONNECTION_ERRORS as exc:
        raise Unavailable("the database is unavailable") from exc
    except psycopg.DataError as exc:
        # Validation should have caught it; never a 500 for a value Postgres cannot store.
        raise InvalidInput.field("body", f"a value cannot be stored: {exc.diag.message_primary}") from exc


class Repository:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _conn(
        self, tenant_id: str | None, name: Callable[[], str | None] = lambda: None
    ) -> AsyncIterator[AsyncConnection[dict[str, Any]]]:
        """A connection in a transaction scoped to ``tenant_id``: row-level security shows it nothing else."""
        async with translated_errors(name), self.pool.connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            if tenant_id is not None:
                await conn.execute(sql("tenant_scope"), {"tenant_id": tenant_id, "actor": current_actor.get()})
            yield conn  # type: ignore[misc]

    async def ping(self) -> None:
        async with self._conn(None) as conn:
            await conn.execute(sql("database_ping"))

    async def schedule_insert(
        self, schedule: Schedule, sealed_secret: str, now: datetime, wake_workers: bool, quota: int
    ) -> Schedule:
        tenant = {"tenant_id": schedule.tenant_id}
        async with self._conn(schedule.tenant_id, lambda: schedule.name) as conn, conn.transaction():
            await conn.execute(sql("schedule_lock_tenant"), tenant)
            cur = await conn.execute(sql("schedule_count_tenant"), tenant)
            count = await cur.fetchone()
            if count is not None and count["count"] >= quota:
                raise QuotaExceeded(f"tenant {schedule.tenant_id} has reached its limit of {quota} schedules")
            params = {**schedule_params(schedule), "now": now, "webhook_secret": sealed_secret}
            cur = await conn.execute(sql("schedule_insert"), params)
            row = await cur.fetchone()
            if wake_workers:
                await conn.execute(sql("schedule_notify"), {"reason": "due"})
        assert row is not None
        return schedule_from_row(row)

    async def _one(self, statement: str, tenant_id: str, object_id: str, what: str) -> dict[str, Any]:
        """The row a tenant-scoped by-id statement returns, or NotFound (another tenant's id is not found too)."""
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(statement, {"tenant_id": tenant_id, "id": object_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"{what} {object_id} not found")
        return row

    async def schedule_get(self, tenant_id: str, schedule_id: str) -> Schedule:
        return schedule_from_row(await self._one(sql("schedule_get"), tenant_id, schedule_id, "schedule"))

    async def schedule_update(
        self,
        tenant_id: str,
        schedule_id: str,
        now: datetime,
        change: Callable[[Schedule], Awaitable[Schedule]],
        wake_workers: Callable[[Schedule], bool],
    ) -> Schedule:
        """Lock the row, apply ``change`` (pure, but awaited: the API evaluates it off the event loop) and store
        its result, in one transaction.

        Holding the row lock means a worker cannot claim this schedule between our read and our write, so a
        schedule disabled here fires no run after this returns.
        """
        key = {"tenant_id": tenant_id, "id": schedule_id}
        updated: Schedule | None = None
        async with self._conn(tenant_id, lambda: updated.name if updated else None) as conn, conn.transaction():
            cur = await conn.execute(sql("schedule_get_for_update"), key)
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            updated = await change(schedule_from_row(row))
            cur = await conn.execute(sql("schedule_update"), {**schedule_params(updated), **key, "now": now})
            stored = await cur.fetchone()
            if wake_workers(updated):
                await conn.execute(sql("schedule_notify"), {"reason": "due"})
        assert stored is not None
        return schedule_from_row(stored)

    async def schedule_set_webhook_secret(
        self, tenant_id: str, schedule_id: str, sealed_secret: str, now: datetime
    ) -> Schedule:
        params = {"tenant_id": tenant_id, "id": schedule_id, "webhook_secret": sealed_secret, "now": now}
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("schedule_set_webhook_secret"), params)
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return schedule_from_row(row)

    async def schedule_delete(self, tenant_id: str, schedule_id: str) -> None:
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("schedule_delete"), {"tenant_id": tenant_id, "id": schedule_id})
            if await cur.fetchone() is None:
                raise NotFound(f"schedule {schedule_id} not found")

    async def schedule_list(
        self, tenant_id: str, where: ListFilter, limit: int, offset: int
    ) -> tuple[list[Schedule], int]:
        params = {
            "tenant_id": tenant_id,
            "enabled": where.enabled,
            "name_prefix": where.name_prefix,
            "labels": _encode(where.labels).decode() if where.labels else None,
        }
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("schedule_list"), {**params, "limit": limit, "offset": offset})
            rows = await cur.fetchall()
            cur = await conn.execute(sql("schedule_count"), params)
            count = await cur.fetchone()
        assert count is not None
        return [schedule_from_row(r) for r in rows], count["count"]

    async def run_insert_manual(
        self, tenant_id: str, schedule_id: str, run_id: str, now: datetime, trace_context: str | None
    ) -> Run:
        params = {
            "id": run_id,
            "tenant_id": tenant_id,
            "schedule_id": schedule_id,
            "now": now,
            "key": f"{schedule_id}:manual:{run_id}",
            "trace_context": trace_context,
        }
        async with self._conn(tenant_id) as conn, conn.transaction():
            cur = await conn.execute(sql("run_insert_manual"), params)
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            await conn.execute(sql("schedule_notify"), {"reason": "run"})
        return run_from_row(row)

    async def run_get(self, tenant_id: str, run_id: str) -> Run:
        return run_from_row(await self._one(sql("run_get"), tenant_id, run_id, "run"))

    async def run_list(
        self, tenant_id: str, schedule_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Run], int]:
        params = {"tenant_id": tenant_id, "schedule_id": schedule_id, "status": status}
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("schedule_get"), {"tenant_id": tenant_id, "id": schedule_id})
            if await cur.fetchone() is None:
                raise NotFound(f"schedule {schedule_id} not found")
            cur = await conn.execute(sql("run_list"), {**params, "limit": limit, "offset": offset})
            rows = await cur.fetchall()
            cur = await conn.execute(sql("run_count"), params)
            count = await cur.fetchone()
        assert count is not None
        return [run_from_row(r) for r in rows], count["count"]
