"""The only code that runs SQL at runtime: named statements from queries.sql, psycopg errors translated here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
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
    MisfirePolicy,
    Run,
    RunStatus,
    Schedule,
    ScheduleStatus,
    decode_retry,
    decode_target,
    decode_trigger,
)

_labels = msgspec.json.Decoder(dict[str, str])
_any = msgspec.json.Decoder()
_encode = msgspec.json.encode


@dataclass(frozen=True, slots=True)
class ListFilter:
    enabled: bool | None = None
    name_prefix: str | None = None
    labels: dict[str, str] | None = None

    @property
    def unfiltered(self) -> bool:
        return self.enabled is None and self.name_prefix is None and not self.labels


@dataclass(frozen=True, slots=True)
class ListPosition:
    """Where a page starts: after a keyset position (created_at, id), else at an offset."""

    after: tuple[datetime, str] | None = None
    offset: int = 0
    count_cap: int = 10_000


# sql/0050: the insert trigger refuses schedules past the tenant's quota with this constraint name.
QUOTA_CONSTRAINT = "tenant_schedule_quota"


class _NameTaken(Exception):
    """A schedule name of the insert is taken (which one is asked after the rollback)."""


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
        "next_run_at": s.next_run_at,
    }


def schedule_many_params(tenant_id: str, items: list[tuple[Schedule, str]], now: datetime) -> dict[str, Any]:
    """The array parameters of schedule_insert_many (one element per schedule, JSON columns as text)."""
    schedules = [s for s, _ in items]
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "ids": [s.id for s in schedules],
        "names": [s.name for s in schedules],
        "descriptions": [s.description for s in schedules],
        "tzs": [s.tz for s in schedules],
        "triggers": [_encode(s.trigger).decode() for s in schedules],
        "targets": [_encode(s.target).decode() for s in schedules],
        "payloads": [_encode(s.payload).decode() for s in schedules],
        "enabled": [s.enabled for s in schedules],
        "misfire_policies": [s.misfire_policy.value for s in schedules],
        "catch_up_limits": [s.catch_up_limit for s in schedules],
        "retries": [_encode(s.retry).decode() for s in schedules],
        "labels": [_encode(s.labels).decode() for s in schedules],
        "next_run_ats": [s.next_run_at for s in schedules],
        "webhook_secrets": [secret for _, secret in items],
        "created_ats": [now + timedelta(microseconds=i) for i in range(len(items))],
    }
    return params


def schedule_from_row(row: dict[str, Any]) -> Schedule:
    next_run_at = row["next_run_at"]
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
                await conn.execute(sql("tenant_scope"), {"tenant_id": tenant_id})
            yield conn  # type: ignore[misc]

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[AsyncConnection[dict[str, Any]]]:
        """A connection whose statements each commit on their own (autocommit): for a statement that scopes
        itself to its tenant (the API role sees no rows without that)."""
        async with translated_errors(), self.pool.connection() as conn:
            conn.row_factory = dict_row  # type: ignore[assignment]
            await conn.set_autocommit(True)
            try:
                yield conn  # type: ignore[misc]
            finally:
                await conn.set_autocommit(False)

    async def ping(self) -> None:
        async with self._conn(None) as conn:
            await conn.execute(sql("database_ping"))

    async def schedule_insert(
        self, schedule: Schedule, sealed_secret: str, now: datetime, wake_workers: bool, quota: int
    ) -> Schedule:
        """Store ``schedule``; QuotaExceeded if its tenant already has ``quota`` schedules (sql/0050's counter)."""
        return (
            await self.schedule_insert_many(schedule.tenant_id, [(schedule, sealed_secret)], now, wake_workers, quota)
        )[0]

    async def schedule_insert_many(
        self,
        tenant_id: str,
        items: list[tuple[Schedule, str]],
        now: datetime,
        wake_workers: bool,
        quota: int,
    ) -> list[Schedule]:
        """Store one tenant's schedules (with their sealed webhook secrets) in one statement, all or none; the
        stored schedules come back in the order given. A name already taken is a Conflict naming the item
        (``items[i].name``, or ``name`` for a single schedule)."""
        single = len(items) == 1
        params = {**schedule_many_params(tenant_id, items, now), "quota": str(quota)}
        try:
            async with self._statement() as conn:
                try:
                    cur = await conn.execute(sql("schedule_insert_many"), params)
                    rows = await cur.fetchall()
                except psycopg.errors.UniqueViolation as exc:
                    if exc.diag.constraint_name != "schedules_tenant_name_key":
                        raise
                    raise _NameTaken from exc
                except psycopg.errors.CheckViolation as exc:
                    if exc.diag.constraint_name != QUOTA_CONSTRAINT:
                        raise
                    more = "another schedule" if single else f"{len(items)} more schedules"
                    raise QuotaExceeded(
                        f"tenant {tenant_id} has reached its limit of {quota} schedules and cannot take {more}"
                    ) from exc
                if wake_workers:  # after the commit: a woken worker finds the new rows
                    await conn.execute(sql("schedule_notify"), {"reason": "due"})
        except _NameTaken as exc:
            # Row-level security hides the key from the error's detail: ask which name it was.
            async with self._conn(tenant_id) as conn:
                cur = await conn.execute(
                    sql("schedule_names_taken"), {"tenant_id": tenant_id, "names": params["names"]}
                )
                taken = {row["name"] for row in await cur.fetchall()}
            index = next((i for i, (s, _) in enumerate(items) if s.name in taken), 0)
            name = items[index][0].name
            field = "name" if single else f"items[{index}].name"
            raise Conflict(f"a schedule named {name!r} already exists", field=field) from exc.__cause__
        by_id = {str(row["id"]): row for row in rows}
        return [schedule_from_row(by_id[s.id]) for s, _ in items]

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
        change: Callable[[Schedule], Schedule],
        wake_workers: Callable[[Schedule], bool],
    ) -> Schedule:
        """Lock the row, apply the pure ``change`` and store its result, in one transaction.

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
            updated = change(schedule_from_row(row))
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
        self, tenant_id: str, where: ListFilter, limit: int, position: ListPosition
    ) -> tuple[list[Schedule], int | None, bool]:
        """One page (``limit`` schedules) from ``position``, the tenant's total (None when filtered and more
        than ``count_cap`` match), and whether more follow."""
        params = {
            "tenant_id": tenant_id,
            "enabled": where.enabled,
            "name_prefix": where.name_prefix,
            "labels": _encode(where.labels).decode() if where.labels else None,
        }
        page: dict[str, Any] = {**params, "limit": limit + 1}  # one more tells whether there is a next page
        async with self._conn(tenant_id) as conn:
            if position.after is not None:
                after_created_at, after_id = position.after
                page |= {"after_created_at": after_created_at, "after_id": after_id}
                cur = await conn.execute(sql("schedule_list_after"), page)
            else:
                cur = await conn.execute(sql("schedule_list"), {**page, "offset": position.offset})
            rows = await cur.fetchall()
            if where.unfiltered:
                cur = await conn.execute(sql("tenant_schedule_count"), {"tenant_id": tenant_id})
            else:
                cur = await conn.execute(sql("schedule_count_capped"), {**params, "cap": position.count_cap + 1})
            count = await cur.fetchone()
        assert count is not None
        total: int | None = count["count"]
        if not where.unfiltered and total is not None and total > position.count_cap:
            total = None
        return [schedule_from_row(r) for r in rows[:limit]], total, len(rows) > limit

    async def tenant_schedule_count(self, tenant_id: str) -> int:
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("tenant_schedule_count"), {"tenant_id": tenant_id})
            row = await cur.fetchone()
        assert row is not None
        return int(row["count"])

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
