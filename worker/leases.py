"""Leases on runs: short, renewed by heartbeat while a delivery is in flight, and checked before each attempt.

A worker holds a run until ``fire.lease_until`` (its own clock). It never starts an attempt without at least
half a lease left: with less (a long backoff, or the process was frozen and its clock ran on), it first
confirms and extends the lease in one statement, and drops the run if another worker took it over meanwhile.
So a worker resumed after a freeze longer than the lease delivers nothing it no longer owns, and a call that
"timed out" across the freeze is not retried by it. Outcomes are recorded only for runs the worker still holds
(the progress statements are fenced on ``leased_by``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from loguru import logger

from shared import metrics
from worker.fire import Fire
from worker.store import WorkerStore


class Leases:
    def __init__(self, store: WorkerStore, clock: Callable[[], datetime], lease_sec: float) -> None:
        self.store = store
        self.clock = clock
        self.lease = timedelta(seconds=lease_sec)

    @property
    def heartbeat_sec(self) -> float:
        """How often in-flight runs are renewed: four times a lease, so one missed beat loses nothing."""
        return self.lease.total_seconds() / 4

    def until(self, now: datetime) -> datetime:
        return now + self.lease

    async def hold(self, fires: list[Fire]) -> list[Fire]:
        """The runs of ``fires`` this worker may attempt now: those with half a lease left as they are, the
        others after extending their lease (one statement); runs taken over meanwhile are marked lost, dropped."""
        now = self.clock()
        margin = now + self.lease / 2
        doubtful = [f for f in fires if not f.lost and (f.lease_until is None or f.lease_until < margin)]
        if doubtful:
            await self._extend(doubtful, now)
        return [f for f in fires if not f.lost]

    async def renew(self, fires: Iterable[Fire]) -> list[Fire]:
        """Heartbeat: extend the leases of in-flight runs with less than three quarters of a lease left;
        returns the runs found lost (taken over by another worker)."""
        now = self.clock()
        soon = now + self.lease * 3 / 4
        due = [f for f in fires if not f.lost and (f.lease_until is None or f.lease_until < soon)]
        if not due:
            return []
        await self._extend(due, now)
        return [f for f in due if f.lost]

    async def _extend(self, fires: list[Fire], now: datetime) -> None:
        until = self.until(now)
        held = await self.store.extend_leases([f.run_id for f in fires], until)
        lost = 0
        for fire in fires:
            if fire.run_id in held:
                fire.lease_until = until
            else:
                fire.lost = True
                lost += 1
        if lost:
            metrics.leases_lost.inc(lost)
            logger.warning(
                "{} run(s) are no longer this worker's (taken over by another worker while this one was away, or "
                "cancelled: overlap CANCEL_OTHER, POST /runs/{{id}}/cancel); dropping them",
                lost,
            )
