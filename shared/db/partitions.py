"""The SQL of run history maintenance: partitions of ``runs`` listed, created and dropped (sql/0040).

The DDL itself runs in SECURITY DEFINER functions of the migration, so the workers' role needs no DDL or
DELETE privilege. Each change is its own short transaction with a lock timeout: attaching takes only a SHARE
UPDATE EXCLUSIVE lock on ``runs``, but detaching takes an ACCESS EXCLUSIVE one, and waiting long for it would
queue every claim behind it. A change that times out is tried again next round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from loguru import logger

from shared.db.queries import sql

LOCK_TIMEOUT = "1s"
DEFAULT_EXPIRE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    starts: datetime | None  # None: unbounded (MINVALUE)
    ends: datetime | None  # None: unbounded (MAXVALUE)


@dataclass(frozen=True, slots=True)
class PartitionPlan:
    create: list[Partition] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    # Finished runs in the default partition scheduled before this are deleted.
    expire_before: datetime | None = None


@dataclass(slots=True)
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept: int = 0  # open runs moved out of dropped partitions
    expired: int = 0  # finished rows deleted from the default partition
    failed: list[str] = field(default_factory=list)


class PartitionStore:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def partitions(self, conn: psycopg.AsyncConnection[Any]) -> list[Partition]:
        cur = await conn.execute(sql("run_partition_list"))
        return [
            Partition(name, starts, ends) for name, starts, ends, is_default in await cur.fetchall() if not is_default
        ]

    async def maintain(self, plan_for: Callable[[list[Partition]], PartitionPlan]) -> MaintenanceReport | None:
        """One round under the fleet's maintenance lock: list the partitions, plan, execute. None when another
        worker holds the lock."""
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            locked = False
            try:
                cur = await conn.execute(sql("run_maintenance_try_lock"))
                row = await cur.fetchone()
                locked = bool(row and row[0])
                if not locked:
                    return None
                report = await self._execute(conn, plan_for(await self.partitions(conn)))
                await conn.execute(sql("run_maintenance_unlock"))
                locked = False
                return report
            finally:
                if locked:
                    # Interrupted (cancelled, a bug): a session lock must not go back to the pool with the
                    # connection, or no worker would maintain again until it closed.
                    await conn.close()
                elif not conn.closed:
                    await conn.set_autocommit(False)  # as the pool's other users expect it

    async def _execute(self, conn: psycopg.AsyncConnection[Any], plan: PartitionPlan) -> MaintenanceReport:
        report = MaintenanceReport()
        # Creating comes first: the claim path needs the partitions ahead more than retention needs the drop.
        for p in plan.create:
            if await self._step(
                conn, report, p.name, sql("run_partition_create"), {"name": p.name, "starts": p.starts, "ends": p.ends}
            ):
                report.created.append(p.name)
        for name in plan.drop:
            kept = await self._step(conn, report, name, sql("run_partition_drop"), {"name": name})
            if kept is not None:
                report.dropped.append(name)
                report.kept += int(kept)
        if plan.expire_before is not None:
            params = {"before": plan.expire_before, "max_rows": DEFAULT_EXPIRE_BATCH}
            expired = await self._step(conn, report, "runs_default", sql("run_default_expire"), params)
            report.expired = int(expired or 0)
        return report

    async def _step(
        self,
        conn: psycopg.AsyncConnection[Any],
        report: MaintenanceReport,
        name: str,
        statement: str,
        params: dict[str, Any],
    ) -> Any:
        try:
            async with conn.transaction():
                await conn.execute(sql("run_maintenance_lock_timeout"), {"timeout": LOCK_TIMEOUT})
                cur = await conn.execute(statement, params)
                row = await cur.fetchone()
            return row[0] if row else None
        except (
            psycopg.errors.LockNotAvailable,
            psycopg.errors.ObjectNotInPrerequisiteState,
            psycopg.errors.CheckViolation,
            psycopg.errors.DuplicateTable,
            psycopg.errors.InvalidObjectDefinition,
        ) as exc:
            # Busy, rows arrived in the default partition for the range being attached, or a partition made by
            # hand overlaps: this change waits for the next round, the others go ahead.
            logger.warning("run history: partition {} not changed this round: {}", name, exc)
            report.failed.append(name)
            return None
