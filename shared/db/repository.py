"""The only code that runs SQL at runtime: named statements from queries.sql, psycopg errors translated here."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import psycopg
import psycopg_pool
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from shared.audit import changes, snapshot, update_action
from shared.db.pool import CONNECTION_ERRORS
from shared.db.queries import sql
from shared.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, Unavailable
from shared.model import (
    ActionAfterCompletion,
    AuditAction,
    AuditEntry,
    MisfirePolicy,
    Notify,
    OverlapPolicy,
    Run,
    RunStatus,
    Schedule,
    ScheduleSort,
    ScheduleStatus,
    TargetKind,
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
    """What GET /schedules selects and how it orders them; ``list_params`` turns it into statement parameters."""

    enabled: bool | None = None
    name_prefix: str | None = None
    labels: dict[str, str] | None = None
    statuses: tuple[ScheduleStatus, ...] = ()
    target_kinds: tuple[TargetKind, ...] = ()
    next_run_before: datetime | None = None
    next_run_after: datetime | None = None
    sort: ScheduleSort = ScheduleSort.CREATED_AT

    @property
    def unfiltered(self) -> bool:
        return self == ListFilter(sort=self.sort)

    @property
    def keyset_order(self) -> bool:
        """Pages can follow a cursor: the order is the (created_at, id) index's."""
        return self.sort is ScheduleSort.CREATED_AT


def list_params(where: ListFilter) -> dict[str, Any]:
    """The filter parameters of schedule_list / schedule_count (None: that filter is off)."""
    return {
        "enabled": where.enabled,
        "name_prefix": where.name_prefix,
        "labels": _encode(where.labels).decode() if where.labels else None,
        "statuses": [s.value for s in where.statuses] or None,
        "target_kinds": [k.value for k in where.target_kinds] or None,
        "next_run_before": where.next_run_before,
        "next_run_after": where.next_run_after,
        "sort": where.sort.value,
    }


@dataclass(frozen=True, slots=True)
class Audit:
    """Who makes a change, when, and any detail the audit entry should carry (a reason, the bulk selector)."""

    actor: str
    at: datetime
    detail: dict[str, Any] | None = None


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
        # The column is when the occurrence is due (fired); the nominal one is kept beside it when they differ.
        "paused_reason": s.paused_reason,
        "paused_at": s.paused_at,
        "paused_by": s.paused_by,
        "next_run_at": due_at(s.id, s.next_run_at, s.jitter_sec),
        "next_nominal_at": s.next_run_at if s.jitter_sec else None,
        "jitter_sec": s.jitter_sec,
        "action_after_completion": s.action_after_completion.value,
        "overlap": s.overlap.value,
        "pause_on_failure": s.pause_on_failure,
        "notify_run_succeeded": s.notify.run_succeeded,
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
        "next_run_ats": [due_at(s.id, s.next_run_at, s.jitter_sec) for s in schedules],
        "webhook_secrets": [secret for _, secret in items],
        "created_ats": [now + timedelta(microseconds=i) for i in range(len(items))],
        "paused_reasons": [s.paused_reason for s in schedules],
        "paused_ats": [s.paused_at for s in schedules],
        "paused_bys": [s.paused_by for s in schedules],
        "pause_on_failures": [s.pause_on_failure for s in schedules],
        "notify_run_succeededs": [s.notify.run_succeeded for s in schedules],
        "jitter_secs": [s.jitter_sec for s in schedules],
        "next_nominal_ats": [s.next_run_at if s.jitter_sec else None for s in schedules],
        "actions_after_completion": [s.action_after_completion.value for s in schedules],
        "overlaps": [s.overlap.value for s in schedules],
    }
    return params


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
        # A paused schedule has no next run (migration 0060 cleared the stored ones).
        next_run_at=next_run_at if row["enabled"] else None,
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
        overlap=OverlapPolicy(row.get("overlap") or "ALLOW"),
        overlap_skipped=row.get("overlap_skipped") or 0,
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


def audit_from_row(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        schedule_id=str(row["schedule_id"]),
        action=AuditAction(row["action"]),
        actor=row["actor"],
        at=row["at"],
        version_before=row["version_before"],
        version_after=row["version_after"],
        changed=_any.decode(row["changed"]),
        before=_any.decode(row["before"]) if row["before"] is not None else None,
        after=_any.decode(row["after"]) if row["after"] is not None else None,
        detail=_any.decode(row["detail"]) if row["detail"] is not None else None,
    )


AuditItem = tuple[str, AuditAction, Schedule | None, Schedule | None]  # schedule id, action, before, after


async def write_audit(conn: AsyncConnection[Any], tenant_id: str, audit: Audit, items: list[AuditItem]) -> None:
    """Append one entry per item, in the caller's transaction."""
    if not items:
        return
    before = [snapshot(b) for _, _, b, _ in items]
    after = [snapshot(a) for _, _, _, a in items]
    params = {
        "tenant_id": tenant_id,
        "actor": audit.actor,
        "at": audit.at,
        "detail": _encode(audit.detail).decode() if audit.detail is not None else None,
        "schedule_ids": [i[0] for i in items],
        "actions": [i[1].value for i in items],
        "version_before": [b.version if b else None for _, _, b, _ in items],
        "version_after": [a.version if a else None for _, _, _, a in items],
        "changed": [_encode(changes(action, b, a)).decode() for _, action, b, a in items],
        "before": [_encode(b).decode() if b is not None else None for b in before],
        "after": [_encode(a).decode() if a is not None else None for a in after],
    }
    await conn.execute(sql("schedule_audit_insert_many"), params)


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


# A schedule change: the changed schedule, None for "nothing to change", or an awaitable of either.
Change = Callable[[Schedule], "Schedule | Awaitable[Schedule | None] | None"]


async def _resolved(value: Schedule | Awaitable[Schedule | None] | None) -> Schedule | None:
    return await value if inspect.isawaitable(value) else value


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
        self, schedule: Schedule, sealed_secret: str, now: datetime, wake_workers: bool, quota: int, audit: Audit
    ) -> Schedule:
        """Store ``schedule``; QuotaExceeded if its tenant already has ``quota`` schedules (sql/0050's counter)."""
        stored = await self.schedule_insert_many(
            schedule.tenant_id, [(schedule, sealed_secret)], now, wake_workers, quota, audit
        )
        return stored[0]

    async def schedule_insert_many(
        self,
        tenant_id: str,
        items: list[tuple[Schedule, str]],
        now: datetime,
        wake_workers: bool,
        quota: int,
        audit: Audit,
    ) -> list[Schedule]:
        """Store one tenant's schedules (with their sealed webhook secrets) and their audit entries in one
        transaction, all or none; the stored schedules come back in the order given. A name already taken is a
        Conflict naming the item (``items[i].name``, or ``name`` for a single schedule)."""
        try:
            async with self._conn(tenant_id) as conn, conn.transaction():
                return await self._insert_many(conn, tenant_id, items, now, wake_workers, quota, audit)
        except _NameTaken as exc:
            # Row-level security hides the key from the error's detail: ask which name it was.
            async with self._conn(tenant_id) as conn:
                names = [s.name for s, _ in items]
                cur = await conn.execute(sql("schedule_names_taken"), {"tenant_id": tenant_id, "names": names})
                taken = {row["name"] for row in await cur.fetchall()}
            index = next((i for i, (s, _) in enumerate(items) if s.name in taken), 0)
            field = "name" if len(items) == 1 else f"items[{index}].name"
            raise Conflict(f"a schedule named {items[index][0].name!r} already exists", field=field) from exc.__cause__

    async def _insert_many(
        self,
        conn: AsyncConnection[dict[str, Any]],
        tenant_id: str,
        items: list[tuple[Schedule, str]],
        now: datetime,
        wake_workers: bool,
        quota: int,
        audit: Audit,
    ) -> list[Schedule]:
        """Insert in the caller's transaction: one statement for the rows (the quota is checked by sql/0050's
        counter trigger), one for their audit entries."""
        params = {**schedule_many_params(tenant_id, items, now), "quota": str(quota)}
        try:
            async with conn.transaction():  # a savepoint: the errors below are translated, not left pending
                cur = await conn.execute(sql("schedule_insert_many"), params)
                rows = await cur.fetchall()
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "schedules_tenant_name_key":
                raise
            raise _NameTaken from exc
        except psycopg.errors.CheckViolation as exc:
            if exc.diag.constraint_name != QUOTA_CONSTRAINT:
                raise
            more = "another schedule" if len(items) == 1 else f"{len(items)} more schedules"
            raise QuotaExceeded(
                f"tenant {tenant_id} has reached its limit of {quota} schedules and cannot take {more}"
            ) from exc
        by_id = {str(row["id"]): row for row in rows}
        stored = [schedule_from_row(by_id[s.id]) for s, _ in items]
        await write_audit(conn, tenant_id, audit, [(s.id, AuditAction.CREATED, None, s) for s in stored])
        if wake_workers:  # delivered at commit: a woken worker finds the new rows
            await conn.execute(sql("schedule_notify"), {"reason": "due"})
        return stored

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
        change: Change,
        wake_workers: Callable[[Schedule], bool],
        audit: Audit,
        action: Callable[[Schedule, Schedule], AuditAction],
    ) -> Schedule:
        """Lock the row, apply ``change`` (pure; it may return an awaitable: the API evaluates triggers off the event
        loop) and store its result with its audit entry, in one transaction.

        Holding the row lock means a worker cannot claim this schedule between our read and our write, so a
        schedule disabled here fires no run after this returns. ``change`` returning None means "nothing to
        change": nothing is written, the version stays.
        """
        key = {"tenant_id": tenant_id, "id": schedule_id}
        attempted: list[Schedule] = []  # the name a unique violation is about is known once changed

        async def tracked(current: Schedule) -> Schedule | None:
            result = await _resolved(change(current))
            if result is not None:
                attempted.append(result)
            return result

        async with (
            self._conn(tenant_id, lambda: attempted[-1].name if attempted else None) as conn,
            conn.transaction(),
        ):
            cur = await conn.execute(sql("schedule_get_for_update"), key)
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            return await self._update(conn, schedule_from_row(row), now, tracked, wake_workers, audit, action)

    async def _update(
        self,
        conn: AsyncConnection[dict[str, Any]],
        current: Schedule,
        now: datetime,
        change: Change,
        wake_workers: Callable[[Schedule], bool],
        audit: Audit,
        action: Callable[[Schedule, Schedule], AuditAction],
    ) -> Schedule:
        """Update a row locked by the caller's transaction."""
        updated = await _resolved(change(current))
        if updated is None:
            return current
        key = {"tenant_id": current.tenant_id, "id": current.id}
        cur = await conn.execute(sql("schedule_update"), {**schedule_params(updated), **key, "now": now})
        row = await cur.fetchone()
        assert row is not None
        stored = schedule_from_row(row)
        await write_audit(conn, current.tenant_id, audit, [(stored.id, action(current, stored), current, stored)])
        if wake_workers(updated):
            await conn.execute(sql("schedule_notify"), {"reason": "due"})
        return stored

    async def schedule_apply_by_name(
        self,
        tenant_id: str,
        name: str,
        now: datetime,
        create: Callable[[], tuple[Schedule, str]],
        change: Change,
        wake_workers: Callable[[Schedule], bool],
        quota: int,
        audit: Audit,
    ) -> tuple[Schedule, bool]:
        """Create the tenant's schedule ``name`` (``create`` gives it and its sealed webhook secret) or change the
        existing one, in one transaction; True when created. The tenant's creation lock is taken first, so two
        concurrent applies of a new name create it once (the second one then updates it)."""
        async with self._conn(tenant_id, lambda: name) as conn, conn.transaction():
            await conn.execute(sql("schedule_lock_tenant"), {"tenant_id": tenant_id})
            cur = await conn.execute(sql("schedule_get_by_name_for_update"), {"tenant_id": tenant_id, "name": name})
            row = await cur.fetchone()
            if row is None:
                schedule, sealed_secret = create()
                try:
                    (stored,) = await self._insert_many(
                        conn, tenant_id, [(schedule, sealed_secret)], now, wake_workers(schedule), quota, audit
                    )
                except _NameTaken as exc:  # only if a plain create took the name meanwhile
                    raise Conflict(f"a schedule named {name!r} already exists", field="name") from exc.__cause__
                return stored, True
            current = schedule_from_row(row)
            return await self._update(conn, current, now, change, wake_workers, audit, update_action), False

    async def schedule_bulk(
        self,
        tenant_id: str,
        labels: dict[str, str],
        limit: int,
        plan: Callable[[list[Schedule]], Awaitable[list[Schedule]]],
        apply: str | None,
        audit: Audit,
        params: dict[str, Any],
    ) -> tuple[list[Schedule], list[Schedule]]:
        """Lock the tenant's schedules matching ``labels`` (InvalidInput beyond ``limit``), let ``plan`` pick the
        ones to change, apply the bulk change ``apply`` (pause, resume, delete; None: a dry run) to them with
        ``params`` and audit each, in one transaction. Returns (matched, changed)."""
        async with self._conn(tenant_id) as conn, conn.transaction():
            cur = await conn.execute(
                sql("schedule_select_by_labels_for_update"),
                {"tenant_id": tenant_id, "labels": _encode(labels).decode(), "limit": limit + 1},
            )
            matched = [schedule_from_row(r) for r in await cur.fetchall()]
            if len(matched) > limit:
                raise InvalidInput.field(
                    "labels", f"selects more than {limit} schedules (BULK_MAX_SCHEDULES); narrow the selector"
                )
            targets = await plan(matched)
            if apply is None or not targets:
                return matched, targets
            statement = {
                "pause": sql("schedule_pause_many"),
                "resume": sql("schedule_resume_many"),
                "delete": sql("schedule_delete_many"),
            }[apply]
            by_id = {s.id: s for s in targets}
            cur = await conn.execute(statement, {"tenant_id": tenant_id, "ids": list(by_id), **params})
            changed = [schedule_from_row(r) for r in await cur.fetchall()]
            changed.sort(key=lambda s: (s.created_at, s.id))
            if apply == "delete":
                items: list[AuditItem] = [(s.id, AuditAction.DELETED, s, None) for s in changed]
            else:
                items = [(s.id, update_action(by_id[s.id], s), by_id[s.id], s) for s in changed]
            await write_audit(conn, tenant_id, audit, items)
            if any(s.enabled and s.next_run_at is not None for s in changed):
                await conn.execute(sql("schedule_notify"), {"reason": "due"})
        return matched, changed

    async def schedule_set_webhook_secret(
        self, tenant_id: str, schedule_id: str, sealed_secret: str, now: datetime, audit: Audit
    ) -> Schedule:
        params = {"tenant_id": tenant_id, "id": schedule_id, "webhook_secret": sealed_secret, "now": now}
        async with self._conn(tenant_id) as conn, conn.transaction():
            cur = await conn.execute(sql("schedule_get_for_update"), {"tenant_id": tenant_id, "id": schedule_id})
            before = await cur.fetchone()
            if before is None:
                raise NotFound(f"schedule {schedule_id} not found")
            cur = await conn.execute(sql("schedule_set_webhook_secret"), params)
            row = await cur.fetchone()
            assert row is not None
            stored = schedule_from_row(row)
            await write_audit(
                conn, tenant_id, audit, [(schedule_id, AuditAction.SECRET_ROTATED, schedule_from_row(before), stored)]
            )
        return stored

    async def schedule_delete(self, tenant_id: str, schedule_id: str, audit: Audit) -> None:
        async with self._conn(tenant_id) as conn, conn.transaction():
            cur = await conn.execute(sql("schedule_delete"), {"tenant_id": tenant_id, "id": schedule_id})
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            await write_audit(
                conn, tenant_id, audit, [(schedule_id, AuditAction.DELETED, schedule_from_row(row), None)]
            )

    async def schedule_history(
        self, tenant_id: str, schedule_id: str, limit: int, offset: int
    ) -> tuple[list[AuditEntry], int]:
        """A schedule's audit entries, newest first; a deleted schedule's stay readable."""
        params = {"tenant_id": tenant_id, "schedule_id": schedule_id}
        async with self._conn(tenant_id) as conn:
            cur = await conn.execute(sql("schedule_audit_count"), params)
            count = await cur.fetchone()
            assert count is not None
            if count["count"] == 0:
                cur = await conn.execute(sql("schedule_get"), {"tenant_id": tenant_id, "id": schedule_id})
                if await cur.fetchone() is None:
                    raise NotFound(f"schedule {schedule_id} not found")
            cur = await conn.execute(sql("schedule_audit_list"), {**params, "limit": limit, "offset": offset})
            rows = await cur.fetchall()
        return [audit_from_row(r) for r in rows], count["count"]

    async def schedule_list(
        self, tenant_id: str, where: ListFilter, limit: int, position: ListPosition
    ) -> tuple[list[Schedule], int | None, bool]:
        """One page (``limit`` schedules) from ``position``, the tenant's total (None when filtered and more
        than ``count_cap`` match), and whether more follow. A cursor (``position.after``) needs the default
        order (``ListFilter.keyset_order``)."""
        params = {"tenant_id": tenant_id, **list_params(where)}
        page: dict[str, Any] = {**params, "limit": limit + 1}  # one more tells whether there is a next page
        async with self._conn(tenant_id) as conn:
            if position.after is not None:
                after_created_at, after_id = position.after
                page |= {"after_created_at": after_created_at, "after_id": after_id}
                cur = await conn.execute(sql("schedule_list_after"), page)
            elif where.keyset_order:
                cur = await conn.execute(sql("schedule_list"), {**page, "offset": position.offset})
            else:
                cur = await conn.execute(sql("schedule_list_sorted"), {**page, "offset": position.offset})
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

    async def run_cancel(
        self,
        tenant_id: str,
        run_id: str,
        now: datetime,
        rearm: Callable[[Schedule], datetime | None],
        audit: Audit,
    ) -> Run:
        """Cancel an open run no worker is delivering (Conflict otherwise); a FIXED_DELAY schedule parked behind
        it is re-armed (``rearm`` gives its next run), as if the run had finished now."""
        key = {"tenant_id": tenant_id, "id": run_id}
        async with self._conn(tenant_id) as conn, conn.transaction():
            # The schedule's row first, as a claim locks it: releasing its overlap below then waits for no one
            # holding the run while waiting for the schedule.
            cur = await conn.execute(sql("run_get"), key)
            found = await cur.fetchone()
            if found is not None:
                await conn.execute(sql("schedule_get_for_update"), {"tenant_id": tenant_id, "id": found["schedule_id"]})
            cur = await conn.execute(sql("run_cancel"), {**key, "now": now, "error": f"cancelled by {audit.actor}"})
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(sql("run_get"), key)
                current = await cur.fetchone()
                if current is None:
                    raise NotFound(f"run {run_id} not found")
                status = current["status"]
                if status in ("PENDING", "RETRYING"):
                    raise Conflict(f"run {run_id} is being delivered right now ({status}); it cannot be cancelled")
                raise Conflict(f"run {run_id} is {status}; only PENDING and RETRYING runs can be cancelled")
            run = run_from_row(row)
            # Under an overlap policy the schedule stops waiting for it (a buffered successor is handed over),
            # and a cancelled buffered run frees the buffer.
            await conn.execute(sql("schedule_overlap_forget_buffered"), {"tenant_id": tenant_id, "run_id": run_id})
            cur = await conn.execute(sql("schedule_overlap_release_many"), {"run_ids": [run_id], "acked": True})
            promoted = [row for row in await cur.fetchall() if row["overlap_run_id"] is not None]
            if promoted:
                ids = [r["overlap_run_id"] for r in promoted]
                cur = await conn.execute(
                    sql("run_release_waiting"), {"ids": ids, "at": [r["overlap_run_at"] for r in promoted], "now": now}
                )
                if cur.rowcount:
                    await conn.execute(sql("schedule_notify"), {"reason": "overlap"})
            cur = await conn.execute(sql("schedule_get_parked_by_run"), {"tenant_id": tenant_id, "run_id": run_id})
            parked = await cur.fetchone()
            if parked is not None:
                schedule = schedule_from_row(parked)
                await conn.execute(
                    sql("schedule_rearm"), {"tenant_id": tenant_id, "id": schedule.id, "next_run_at": rearm(schedule)}
                )
            cur = await conn.execute(sql("schedule_get"), {"tenant_id": tenant_id, "id": run.schedule_id})
            schedule_row = await cur.fetchone()
            if schedule_row is not None:  # a deleted schedule's runs have no history to add to
                current_schedule = schedule_from_row(schedule_row)
                detail = {**(audit.detail or {}), "runId": run_id, "scheduledFor": run.scheduled_for.isoformat()}
                await write_audit(
                    conn,
                    tenant_id,
                    Audit(audit.actor, audit.at, detail),
                    [(run.schedule_id, AuditAction.RUN_CANCELLED, current_schedule, current_schedule)],
                )
        return run

    async def run_backfill(
        self,
        tenant_id: str,
        schedule_id: str,
        check: Callable[[Schedule, int], Awaitable[list[tuple[str, datetime, str]]]],
        now: datetime,
        dry_run: bool,
        audit: Audit,
    ) -> tuple[list[tuple[str, datetime, str]], set[str]]:
        """Record the occurrences ``check`` computes from the locked schedule and its open-run count (run id,
        scheduled_for, key); returns them and the ids that were already recorded. A dry run records nothing."""
        key = {"tenant_id": tenant_id, "id": schedule_id}
        async with self._conn(tenant_id) as conn, conn.transaction():
            cur = await conn.execute(sql("schedule_get_for_update"), key)
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"schedule {schedule_id} not found")
            schedule = schedule_from_row(row)
            cur = await conn.execute(sql("run_count_open"), {"tenant_id": tenant_id, "schedule_id": schedule_id})
            open_runs = await cur.fetchone()
            assert open_runs is not None
            occurrences = await check(schedule, open_runs["count"])
            ids = [o[0] for o in occurrences]
            if dry_run or not occurrences:
                cur = await conn.execute(sql("run_existing_many"), {"tenant_id": tenant_id, "ids": ids})
                return occurrences, {r["id"] for r in await cur.fetchall()}
            params = {
                "tenant_id": tenant_id,
                "schedule_id": schedule_id,
                "now": now,
                "run_ids": ids,
                "scheduled_for": [o[1] for o in occurrences],
                "keys": [o[2] for o in occurrences],
            }
            cur = await conn.execute(sql("run_insert_backfill"), params)
            created = {r["id"] for r in await cur.fetchall()}
            detail = {**(audit.detail or {}), "created": len(created), "existing": len(ids) - len(created)}
            await write_audit(
                conn,
                tenant_id,
                Audit(audit.actor, audit.at, detail),
                [(schedule_id, AuditAction.BACKFILLED, schedule, schedule)],
            )
            if created:
                await conn.execute(sql("schedule_notify"), {"reason": "run"})
        return occurrences, set(ids) - created
