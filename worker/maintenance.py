"""Run history partitions: created ahead, dropped when expired, by one worker of the fleet at a time.

``plan_partitions`` is pure (the time comes in): which partitions of ``runs`` to create and which to drop. The
store (``shared/db/partitions.py``) executes a plan under an advisory lock, so whichever worker gets the lock
does the round and the others skip it. Partitions are slots of ``RUNS_PARTITION_SEC`` by ``scheduled_for``,
aligned to the Unix epoch in UTC; the plan keeps the previous, the current and ``RUNS_PARTITIONS_AHEAD`` next
slots created (a run is recorded in the slot of its scheduled time, which is now or a little before), and
drops every partition that ended more than ``RUNS_RETENTION_DAYS`` ago. A slot partly covered by an existing
partition (the pre-partitioning history ends at a full hour) gets a partition for the rest of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from loguru import logger

from shared.db.partitions import MaintenanceReport, Partition, PartitionPlan, PartitionStore
from shared.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PartitionConfig:
    span: timedelta
    ahead: int
    retention: timedelta

    def __post_init__(self) -> None:
        if self.span < timedelta(seconds=1) or self.span % timedelta(seconds=1):
            raise ValueError("RUNS_PARTITION_SEC must be a whole number of seconds >= 1")
        if self.ahead < 1:
            raise ValueError("RUNS_PARTITIONS_AHEAD must be at least 1")
        if self.retention <= timedelta(0):
            raise ValueError("RUNS_RETENTION_DAYS must be > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> PartitionConfig:
        return cls(
            span=timedelta(seconds=settings.runs_partition_sec),
            ahead=settings.runs_partitions_ahead,
            retention=timedelta(days=settings.runs_retention_days),
        )


def slot_start(at: datetime, span: timedelta) -> datetime:
    return _EPOCH + ((at - _EPOCH) // span) * span


def partition_name(starts: datetime) -> str:
    return f"runs_p{starts.astimezone(UTC):%Y%m%d_%H%M%S}"


def _uncovered(starts: datetime, ends: datetime, existing: list[Partition]) -> list[tuple[datetime, datetime]]:
    """The parts of [starts, ends) that no existing partition covers."""
    pieces = [(starts, ends)]
    for p in existing:
        lo = p.starts or datetime.min.replace(tzinfo=UTC)
        hi = p.ends or datetime.max.replace(tzinfo=UTC)
        rest = []
        for a, b in pieces:
            if hi <= a or lo >= b:
                rest.append((a, b))
                continue
            if a < lo:
                rest.append((a, lo))
            if hi < b:
                rest.append((hi, b))
        pieces = rest
    return pieces


def plan_partitions(now: datetime, existing: list[Partition], config: PartitionConfig) -> PartitionPlan:
    """What to create and drop at ``now``, given the partitions that exist (the default one excluded)."""
    cutoff = now - config.retention
    drop = [p.name for p in existing if p.ends is not None and p.ends <= cutoff]
    create = []
    current = slot_start(now, config.span)
    for k in range(-1, config.ahead + 1):
        starts = current + k * config.span
        for lo, hi in _uncovered(starts, starts + config.span, existing):
            if hi > cutoff:
                create.append(Partition(partition_name(lo), lo, hi))
    return PartitionPlan(create=create, drop=drop, expire_before=cutoff)


class Maintenance:
    """Offers to do a maintenance round every ``interval_sec`` until stopped."""

    def __init__(
        self, store: PartitionStore, config: PartitionConfig, clock: Callable[[], datetime], interval_sec: float
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.interval_sec = interval_sec
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> MaintenanceReport | None:
        """One round, or None when another worker holds the maintenance lock."""
        now = self.clock()
        report = await self.store.maintain(lambda existing: plan_partitions(now, existing, self.config))
        if report is not None and (report.created or report.dropped or report.expired):
            logger.info(
                "run history: created {}, dropped {} (kept {} open run(s)), deleted {} expired default row(s)",
                report.created or "no partition",
                report.dropped or "no partition",
                report.kept,
                report.expired,
            )
        return report

    async def run_logged(self) -> None:
        try:
            await self.run_once()
        except psycopg.Error as exc:
            # A lock not granted in time or the database away: the next round tries again, and partitions are
            # made ahead so that a missed round costs nothing.
            logger.warning("run history maintenance failed: {}", exc)
        except Exception:
            logger.exception("run history maintenance crashed; retrying next round")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_sec)
            await self.run_logged()

    async def start(self) -> None:
        """A first round now, then one every interval in the background.

        The first round comes before the worker claims anything: on a new database (or after maintenance was
        off) the current slot's partition then exists before runs are recorded, instead of runs going to the
        default partition and being moved out of it while claims keep adding more.
        """
        await self.run_logged()
        self._task = asyncio.create_task(self.run(), name="runs-maintenance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def start_maintenance(settings: Settings, pool: object, clock: Callable[[], datetime]) -> Maintenance | None:
    """The worker's partition maintenance, one round done and the rest running (None when
    RUNS_MAINTENANCE_INTERVAL_SEC is 0)."""
    if settings.runs_maintenance_interval_sec <= 0:
        return None
    maintenance = Maintenance(
        PartitionStore(pool), PartitionConfig.from_settings(settings), clock, settings.runs_maintenance_interval_sec
    )
    await maintenance.start()
    return maintenance
